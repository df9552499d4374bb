"""The local provider's log reads: the log files' newest events merged with the database's (training, API,
alerts), the errors among them, the audit trail, the training log paged, and the export of whole days."""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Iterator, Optional

import data_loader
import database
from dashboard.contract import Payload
from dashboard.local import log_views
from dashboard.local.orchestrator_state import OrchestratorState
from dashboard.store import audit, events

ERROR_LEVELS = ("ERROR", "CRITICAL", "WARNING")


class LogReads:
    """A mixin of LocalDataProvider: recent events, errors, the audit trail, training logs and their export."""

    def recent_logs(self, limit: int, level: Optional[str]) -> Payload:
        s = self.state()
        levels = (level.upper(),) if level else None
        return Payload(self._merged_events(s, limit, levels), s.warnings)

    def system_errors(self, limit: int) -> Payload:
        s = self.state()
        return Payload(self._merged_events(s, limit, ERROR_LEVELS), s.warnings)

    def _merged_events(self, s: OrchestratorState, limit: int, levels: Optional[tuple]) -> list[dict]:
        """The log files' newest events and the database's events (training, API, alerts), newest first."""
        severities = [lvl.lower() for lvl in levels] if levels else None
        stored = self._from_db(s, lambda db: events.newest_events(db, limit * 2, severities),
                               key=("events", limit, tuple(severities or ()))) or []
        # Kept with the files' view, which lives only while the database is unchanged too.
        return s.memo(("merged_events", limit, levels),
                      lambda: log_views.merged(log_views.newest_file_events(s, limit, levels), stored, limit))

    def system_audit(self, limit: int) -> Payload:
        return Payload(audit.entries(database.get_db(), limit), [])

    def training_logs(self, limit: int, offset: int) -> Payload:
        s = self.state()
        events = log_views.newest_file_events(s, limit + offset + 1)
        data = {"events": events[offset:offset + limit], "limit": limit, "offset": offset,
                "has_more": len(events) > offset + limit}
        return Payload(data, s.warnings)

    def export_logs(self, days: int) -> Iterator[dict]:
        s = self.state()
        cutoff = datetime.combine(s.now.date() - timedelta(days=days - 1), datetime.min.time())
        for path in reversed(s.log_files):
            for event in data_loader.iter_log_events(path, since=cutoff):
                if event["timestamp"] >= cutoff:
                    yield log_views.as_api_event(s, event)
