"""The outbox: notifications written with the change they announce (schema.sql's triggers, or queue()),
fanned out to one delivery per target, each delivery pending until its target answers 2xx.

Only the notifier (one process) and the POSTs write here; reads (recent) never do.
"""
from __future__ import annotations

import json
import sqlite3
import uuid
from datetime import datetime, timedelta
from typing import Callable, Iterable, Optional

from database import transaction
from dashboard.timestamps import to_iso

FAN_OUT_BATCH = 500


def queue(conn: sqlite3.Connection, event: str, severity: str, *, alert: Optional[dict] = None,
          run: Optional[dict] = None, created_at: str) -> int:
    """Add one notification in the caller's transaction; return its id."""
    return conn.execute(
        "INSERT INTO notifications (event, severity, alert_id, alert, run, created_at) VALUES (?, ?, ?, ?, ?, ?)",
        (event, severity, alert and alert["id"], alert and json.dumps(alert), run and json.dumps(run),
         created_at)).lastrowid


def fan_out(conn: sqlite3.Connection, targets: Iterable, wanted: Callable[[str, str], bool], now: str,
            oldest: str) -> int:
    """Give each new notification that `wanted(event, severity)` one delivery per target; return how many.
    One created before `oldest` (while no target was configured) is passed over: it is too late to say."""
    targets = list(targets)
    added = 0
    if conn.execute("SELECT 1 FROM notifications WHERE fanned_out = 0 LIMIT 1").fetchone() is None:
        return 0  # the usual round: no write lock taken
    with transaction(conn, read_by_provider=False):
        rows = conn.execute("SELECT id, event, severity, created_at FROM notifications WHERE fanned_out = 0"
                            " ORDER BY id LIMIT ?", (FAN_OUT_BATCH,)).fetchall()
        for row in rows:
            if row["created_at"] >= oldest and wanted(row["event"], row["severity"]):
                conn.executemany(
                    "INSERT INTO notification_deliveries (delivery_id, notification_id, target, host, next_attempt_at,"
                    " created_at) VALUES (?, ?, ?, ?, ?, ?)",
                    [(str(uuid.uuid4()), row["id"], t.key, t.host, now, now) for t in targets])
                added += len(targets)
            conn.execute("UPDATE notifications SET fanned_out = 1 WHERE id = ?", (row["id"],))
    return added


def oldest_pending(conn: sqlite3.Connection, target_key: str) -> Optional[dict]:
    """The target's oldest pending delivery with its notification (it blocks the newer ones), or None."""
    row = conn.execute(
        "SELECT d.id, d.delivery_id, d.attempts, d.next_attempt_at, d.created_at, n.event, n.alert, n.run"
        " FROM notification_deliveries AS d JOIN notifications AS n ON n.id = d.notification_id"
        " WHERE d.target = ? AND d.status = 'pending' ORDER BY d.id LIMIT 1", (target_key,)).fetchone()
    if row is None:
        return None
    found = dict(row)
    found["alert"] = json.loads(found["alert"]) if found["alert"] else None
    found["run"] = json.loads(found["run"]) if found["run"] else None
    return found


def count_attempt(conn: sqlite3.Connection, delivery: int) -> int:
    """Record an attempt before it is made (a crash mid-send still counts it); return the attempt's number."""
    with transaction(conn, read_by_provider=False):
        conn.execute("UPDATE notification_deliveries SET attempts = attempts + 1 WHERE id = ?", (delivery,))
        return conn.execute("SELECT attempts FROM notification_deliveries WHERE id = ?", (delivery,)).fetchone()[0]


def mark_sent(conn: sqlite3.Connection, delivery: int, now: str) -> None:
    """The target answered 2xx."""
    with transaction(conn, read_by_provider=False):
        conn.execute("UPDATE notification_deliveries SET status = 'sent', sent_at = ?, last_error = NULL"
                     " WHERE id = ?", (now, delivery))


def mark_retry(conn: sqlite3.Connection, delivery: int, at: str, error: str) -> None:
    """Try again at `at`; `error` says why this attempt failed."""
    with transaction(conn, read_by_provider=False):
        conn.execute("UPDATE notification_deliveries SET next_attempt_at = ?, last_error = ? WHERE id = ?",
                     (at, error[:500], delivery))


def mark_failed(conn: sqlite3.Connection, delivery: int, error: str) -> None:
    """A permanent failure: never tried again, and the target's next delivery goes on."""
    with transaction(conn, read_by_provider=False):
        conn.execute("UPDATE notification_deliveries SET status = 'failed', last_error = ? WHERE id = ?",
                     (error[:500], delivery))


def fail_unconfigured(conn: sqlite3.Connection, keys: Iterable[str]) -> int:
    """Pending deliveries of targets no longer in ALERT_WEBHOOK_URLS: failed (nobody would send them)."""
    keys = list(keys)
    placeholders = ",".join("?" * len(keys))
    if conn.execute(f"SELECT 1 FROM notification_deliveries WHERE status = 'pending' AND target NOT IN ({placeholders})"
                    " LIMIT 1", keys).fetchone() is None:
        return 0
    with transaction(conn, read_by_provider=False):
        return conn.execute(
            f"UPDATE notification_deliveries SET status = 'failed', last_error = 'target no longer configured'"
            f" WHERE status = 'pending' AND target NOT IN ({placeholders})", keys).rowcount


def queue_reminders(conn: sqlite3.Connection, repeat_minutes: float, now: datetime) -> int:
    """Raise again each active alert that is not acknowledged and was last announced `repeat_minutes` ago
    (0: never), and each whose acknowledgement lapsed; return how many were queued."""
    stamp = to_iso(now)
    due = to_iso(now - timedelta(minutes=repeat_minutes)) if repeat_minutes > 0 else None
    if not _reminders_due(conn, stamp, due):
        return 0  # the usual round: no write lock taken
    with transaction(conn):  # counted: a lapsed ack changes what /api/system/alerts shows
        rows = _reminders_due(conn, stamp, due)  # again, under the lock: an ack may have come meanwhile
        for row in rows:
            if row["acked"] is not None:
                conn.execute("DELETE FROM alert_acks WHERE alert_id = ?", (row["id"],))
            alert = {k: row[k] for k in ("id", "severity", "source", "message", "since")}
            queue(conn, "alert.raised", row["severity"], alert={**alert, "ended_at": None}, created_at=stamp)
    return len(rows)


def _reminders_due(conn: sqlite3.Connection, stamp: str, due: Optional[str]) -> list[sqlite3.Row]:
    """Active alerts whose ack lapsed by `stamp`, and those not acknowledged last announced by `due`."""
    rows = conn.execute(
        "SELECT a.id, a.severity, a.source, a.message, a.since, k.alert_id AS acked, k.until,"
        " (SELECT MAX(created_at) FROM notifications AS n WHERE n.alert_id = a.id AND n.event = 'alert.raised')"
        " AS announced FROM alerts AS a LEFT JOIN alert_acks AS k ON k.alert_id = a.id").fetchall()
    lapsed = [r for r in rows if r["acked"] is not None and r["until"] is not None and r["until"] <= stamp]
    repeat = [r for r in rows if r["acked"] is None and due is not None and (r["announced"] or r["since"]) <= due]
    return lapsed + repeat


def recent(conn: sqlite3.Connection, limit: int) -> list[dict]:
    """The newest `limit` deliveries, newest first, as GET /api/system/notifications lists them."""
    rows = conn.execute(
        "SELECT d.delivery_id, n.event, n.alert_id, d.host AS target, d.status, d.attempts, d.last_error,"
        " d.created_at, d.sent_at FROM notification_deliveries AS d"
        " JOIN notifications AS n ON n.id = d.notification_id ORDER BY d.id DESC LIMIT ?", (limit,)).fetchall()
    return [dict(r) for r in rows]


def prune(conn: sqlite3.Connection, before: str) -> int:
    """Forget notifications created before `before` that have nothing pending; return how many went."""
    with transaction(conn, read_by_provider=False):
        return conn.execute(
            "DELETE FROM notifications WHERE created_at < ? AND NOT EXISTS (SELECT 1 FROM"
            " notification_deliveries AS d WHERE d.notification_id = notifications.id AND d.status = 'pending')",
            (before,)).rowcount
