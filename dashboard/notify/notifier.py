"""The notifier: one process across the workers (background.LeaderLoop) delivers the outbox.

Every NOTIFY_SECONDS, as the leader: fan new notifications out to the targets, queue reminders of alerts
still active, then per target send the oldest pending delivery, and the next once that one is done. A
delivery is marked sent only after a 2xx, so a crash mid-send means one more attempt of the same
delivery_id (the receiver's idempotency key), never a lost one.
"""
from __future__ import annotations

import sqlite3
import time
from datetime import datetime, timedelta, timezone

from dashboard.notify import outbox, webhook
from dashboard.notify.targets import targets_of
from dashboard.ops.background import LeaderLoop
from dashboard.timestamps import parse_iso, to_iso

SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}
ROUND_SECONDS = 20  # a round stops sending after this long, so reminders and new rows are not held up
PRUNE_EVERY_SECONDS = 3600
KEEP_DAYS = 30


class Notifier(LeaderLoop):
    """Delivers the notifications of `config`'s database to ALERT_WEBHOOK_URLS."""

    name, label = "notifier", "notifier"

    def __init__(self, config: dict):
        super().__init__(config["DATABASE_PATH"], config["NOTIFY_SECONDS"] or 1)
        self.targets = targets_of(config)
        self.format, self.secret = config["ALERT_WEBHOOK_FORMAT"], config["ALERT_WEBHOOK_SECRET"]
        self.min_rank = SEVERITY_RANK[config["ALERT_WEBHOOK_MIN_SEVERITY"]]
        self.timeout = config["ALERT_WEBHOOK_TIMEOUT_SECONDS"]
        self.completed = config["ALERT_WEBHOOK_NOTIFY_COMPLETED"]
        self.repeat_minutes = config["ALERT_WEBHOOK_REPEAT_MINUTES"]
        self.give_up = timedelta(hours=config["ALERT_WEBHOOK_RETRY_HOURS"])
        self.backoff_max = config["ALERT_WEBHOOK_BACKOFF_MAX_SECONDS"]
        self.dashboard = {"url": config["DASHBOARD_PUBLIC_URL"] or None, "environment": config["ENVIRONMENT"]}
        self._http = None
        self._last_prune = float("-inf")

    def wanted(self, event: str, severity: str) -> bool:
        """Whether a notification goes out at all: tests always, completed runs when asked, the rest by severity."""
        if event == "test":
            return True
        if event == "training.completed":
            return self.completed
        return SEVERITY_RANK.get(severity, 2) >= self.min_rank

    def tick(self, conn: sqlite3.Connection) -> None:
        """Fan out, queue reminders, deliver what is due; prune old rows hourly."""
        now = datetime.now(timezone.utc)
        outbox.fan_out(conn, self.targets, self.wanted, to_iso(now), to_iso(now - self.give_up))
        if self.targets:
            outbox.queue_reminders(conn, self.repeat_minutes, now)
        outbox.fail_unconfigured(conn, [t.key for t in self.targets])
        deadline = time.monotonic() + ROUND_SECONDS
        for target in self.targets:
            while time.monotonic() < deadline and self.deliver_next(conn, target):
                pass
        if time.monotonic() - self._last_prune > PRUNE_EVERY_SECONDS:
            outbox.prune(conn, to_iso(now - timedelta(days=KEEP_DAYS)))
            self._last_prune = time.monotonic()

    def deliver_next(self, conn: sqlite3.Connection, target) -> bool:
        """Attempt the target's oldest pending delivery when due; True when the next one may go now."""
        delivery = outbox.oldest_pending(conn, target.key)
        now = datetime.now(timezone.utc)
        if delivery is None or parse_iso(delivery["next_attempt_at"]) > now:
            return False
        if now - parse_iso(delivery["created_at"]) > self.give_up:
            error = f"gave up after {delivery['attempts']} attempts over {self.give_up.total_seconds() / 3600:g} h"
            outbox.mark_failed(conn, delivery["id"], error)
            self.log.error("notifier: delivery %s to %s failed: %s", delivery["delivery_id"], target.host, error)
            return True
        attempts = outbox.count_attempt(conn, delivery["id"])
        body = webhook.body_of(delivery, self.format, self.dashboard, to_iso(now))
        outcome = webhook.post(self._session(), target.url, body, delivery["delivery_id"], self.secret, self.timeout)
        if outcome.status == "sent":
            outbox.mark_sent(conn, delivery["id"], to_iso(datetime.now(timezone.utc)))
            self.log.info("notifier: %s %s sent to %s", delivery["event"], delivery["delivery_id"], target.host)
            return True
        if outcome.status == "failed":
            outbox.mark_failed(conn, delivery["id"], outcome.error)
            self.log.error("notifier: %s %s to %s failed for good: %s", delivery["event"], delivery["delivery_id"],
                           target.host, outcome.error)
            return True
        wait = webhook.backoff(attempts, self.backoff_max, outcome.retry_after)
        outbox.mark_retry(conn, delivery["id"], to_iso(now + timedelta(seconds=wait)), outcome.error)
        self.log.warning("notifier: %s %s to %s: %s; attempt %d, next in %.0f s", delivery["event"],
                         delivery["delivery_id"], target.host, outcome.error, attempts, wait)
        return False

    def start(self) -> "Notifier":
        """Start the thread with a session of its own (none inherited across a fork)."""
        self._http = None
        return super().start()

    def _session(self):
        if self._http is None:
            self._http = webhook.session()
        return self._http
