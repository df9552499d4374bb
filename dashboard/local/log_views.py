"""Log events as the API shows them: the newest lines of the orchestrator's logs, merged with the
events the database keeps (training, API errors, alerts, and log lines the files have rotated away)."""
from __future__ import annotations

from typing import Optional

from dashboard.store import events
from dashboard.local.orchestrator_state import OrchestratorState


def as_api_event(s: OrchestratorState, event: dict) -> dict:
    """A parsed log event with its time in UTC."""
    return {"timestamp": s.iso(event["timestamp"]), "level": event["level"],
            "source": event["source"], "message": event["message"]}


def newest_file_events(s: OrchestratorState, limit: int, levels: Optional[tuple] = None) -> list[dict]:
    """The newest `limit` events of the logs (only `levels`, when given), newest first."""
    found: list[dict] = []
    for path in s.log_files:
        found.extend(reversed([e for e in s.log_events(path) if levels is None or e["level"] in levels]))
        if len(found) >= limit:
            break
    return [as_api_event(s, e) for e in found[:limit]]


def merged(from_files: list[dict], stored: list[dict], limit: int) -> list[dict]:
    """The newest `limit` of the files' events and the stored ones (events rows), newest first; a stored
    line the files still show is shown once."""
    seen = {(e["timestamp"], e["level"], e["message"]) for e in from_files}
    oldest_file_event = from_files[-1]["timestamp"] if len(from_files) >= limit else ""
    extra = [e for e in map(events.as_log_event, stored)
             if (e["timestamp"], e["level"], e["message"]) not in seen and e["timestamp"] >= oldest_file_event]
    # Merge by time, but keep the log's own order among its lines (its clock may jump).
    result, i, j = [], 0, 0
    while len(result) < limit and (i < len(from_files) or j < len(extra)):
        if j >= len(extra) or (i < len(from_files) and from_files[i]["timestamp"] >= extra[j]["timestamp"]):
            result.append(from_files[i])
            i += 1
        else:
            result.append(extra[j])
            j += 1
    return result
