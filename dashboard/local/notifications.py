"""The local provider's alert acknowledgements and webhook notifications (docs/notifications.md): the
deliveries read back, a test queued, an alert acknowledged. The notifier (dashboard/notify) sends."""
from __future__ import annotations

from datetime import datetime, timezone

import database
from dashboard.contract import AckAlert, Answer, Payload
from dashboard.notify import outbox
from dashboard.notify.targets import targets_of
from dashboard.store import alert_acks
from dashboard.timestamps import to_iso
from dashboard.web.errors import ApiError

NO_TARGETS = "no webhook targets: set ALERT_WEBHOOK_URLS (docs/notifications.md)"


class Notifications:
    """A mixin of LocalDataProvider; `notify_targets` are ALERT_WEBHOOK_URLS's targets, checked."""

    def init_notifications(self, config: dict) -> None:
        """Read the targets once (a bad URL is a ConfigError at start-up)."""
        self.notify_targets = targets_of(config)

    def acknowledge_alert(self, alert_id: str, ack: AckAlert) -> Payload:
        alert = alert_acks.acknowledge(database.get_db(), alert_id, ack.note, ack.minutes, datetime.now(timezone.utc))
        if alert is None:
            raise ApiError(404, f"unknown alert_id: {alert_id} (not an active alert)")
        return Payload(alert, [])

    def system_notifications(self, limit: int) -> Payload:
        rows = outbox.recent(database.get_db(), limit)
        return Payload(rows, [] if self.notify_targets else [NO_TARGETS])

    def test_notification(self) -> Payload:
        hosts = [t.host for t in self.notify_targets]
        if not hosts:
            return Answer({"queued": 0, "targets": []}, [NO_TARGETS], 202)
        db = database.get_db()
        with database.transaction(db, read_by_provider=False):
            outbox.queue(db, "test", "info", created_at=to_iso(datetime.now(timezone.utc)))
        return Answer({"queued": len(hosts), "targets": hosts}, [], 202)
