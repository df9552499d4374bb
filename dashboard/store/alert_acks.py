"""Acknowledgements of active alerts: who looked, with a note, optionally for some minutes. An ack lives
with its alert (schema.sql's trigger deletes it when the alert clears); while it holds, the alert sends
no reminder or escalation (dashboard/notify), only its clearing."""
from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta
from typing import Optional

from database import transaction
from dashboard.timestamps import to_iso


def acknowledge(conn: sqlite3.Connection, alert_id: str, note: Optional[str], minutes: Optional[int],
                now: datetime) -> Optional[dict]:
    """Acknowledge the active alert `alert_id` (again: the new note and minutes replace the old); its row
    with the ack, or None when no such alert is active."""
    until = to_iso(now + timedelta(minutes=minutes)) if minutes else None
    with transaction(conn):
        row = conn.execute("SELECT id, severity, source, message, since FROM alerts WHERE id = ?",
                           (alert_id,)).fetchone()
        if row is None:
            return None
        conn.execute("INSERT OR REPLACE INTO alert_acks (alert_id, acknowledged_at, note, until) VALUES (?, ?, ?, ?)",
                     (alert_id, to_iso(now), note, until))
    return {**dict(row), "acknowledged": True, "acknowledged_at": to_iso(now), "note": note}


def acks(conn: sqlite3.Connection) -> dict[str, dict]:
    """{alert id: {acknowledged_at, note, until}} of every acknowledgement on record."""
    return {r["alert_id"]: {"acknowledged_at": r["acknowledged_at"], "note": r["note"], "until": r["until"]}
            for r in conn.execute("SELECT alert_id, acknowledged_at, note, until FROM alert_acks")}


def with_acks(alerts: list[dict], recorded: dict[str, dict], now: str) -> list[dict]:
    """`alerts` each with `acknowledged`, `acknowledged_at` and `note` (an ack past its `until` is none)."""
    result = []
    for alert in alerts:
        ack = recorded.get(alert["id"])
        if ack is not None and ack["until"] is not None and ack["until"] <= now:
            ack = None
        result.append({**alert, "acknowledged": ack is not None, "acknowledged_at": ack and ack["acknowledged_at"],
                       "note": ack and ack["note"]})
    return result
