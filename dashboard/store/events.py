"""The events table: what happened and when (training, orchestrator errors, API errors, alert changes)."""
from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
from typing import Iterable, Optional

from database import connect, transaction
from dashboard.timestamps import utc_now

log = logging.getLogger(__name__)

SEVERITIES = ("debug", "info", "warning", "error", "critical")
# Log levels as the API shows them, for events read back as log lines.
LEVEL_OF_SEVERITY = {s: s.upper() for s in SEVERITIES}


def fingerprint(*parts: object) -> str:
    """A stable key for an event that may be recorded more than once (an ingested log line)."""
    return hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8", "replace")).hexdigest()[:32]


def record_event(conn: sqlite3.Connection, event_type: str, message: str, *, severity: str = "info",
                 source: Optional[str] = None, agent_id: Optional[str] = None, metadata: Optional[dict] = None,
                 timestamp: Optional[str] = None, key: Optional[str] = None) -> bool:
    """Store one event; with `key`, a second event of the same key is ignored. True when a row was added."""
    rows = record_events(conn, [dict(event_type=event_type, message=message, severity=severity, source=source,
                                     agent_id=agent_id, metadata=metadata, timestamp=timestamp, key=key)])
    return rows == 1


def record_events(conn: sqlite3.Connection, events: Iterable[dict]) -> int:
    """Store many events in one transaction (keys as for record_event); return how many were new."""
    events = list(events)
    if not events:
        return 0
    with transaction(conn):
        return insert_events(conn, events)


def insert_events(conn: sqlite3.Connection, events: Iterable[dict]) -> int:
    """Add events inside the caller's transaction; return how many were new.

    Each is a dict of record_event's arguments: `event_type` and `message`, optionally `severity` (info),
    `source`, `agent_id`, `metadata` (a dict, stored as JSON), `timestamp` (now) and `key` (a second event
    of the same key is ignored)."""
    now = utc_now()
    before = conn.total_changes
    conn.executemany(
        "INSERT OR IGNORE INTO events (timestamp, event_type, agent_id, message, severity, metadata, source,"
        " fingerprint) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [(e.get("timestamp") or now, e["event_type"], e.get("agent_id"), e["message"], e.get("severity", "info"),
          json.dumps(e["metadata"]) if e.get("metadata") is not None else None, e.get("source"), e.get("key"))
         for e in events])
    return conn.total_changes - before


def record_api_error(db_path, method: str, path: str, status: int, message: str) -> None:
    """Store a 5xx answer as an `api_error` event; never raises (the database may be what failed)."""
    try:
        conn = connect(db_path, busy_timeout=0.5)
        try:
            record_event(conn, "api_error", f"{method} {path} answered {status}: {message}"[:1000],
                         severity="error", source="api", metadata={"status": status, "path": path})
        finally:
            conn.close()
    except sqlite3.Error as err:
        log.debug("could not record the API error as an event: %s", err)


def newest_events(conn: sqlite3.Connection, limit: int, severities: Optional[Iterable[str]] = None) -> list[dict]:
    """The newest `limit` events (optionally only those severities), newest first."""
    # The audit's rows (audit.EVENT_TYPE) are read by GET /api/system/audit, not shown as log lines.
    clause, params = "WHERE event_type <> 'api_write'", []
    if severities is not None:
        params = list(severities)
        clause += f" AND severity IN ({','.join('?' * len(params))})"
    rows = conn.execute(
        f"SELECT timestamp, event_type, agent_id, message, severity, source FROM events {clause}"
        " ORDER BY timestamp DESC, id DESC LIMIT ?", (*params, limit)).fetchall()
    return [dict(r) for r in rows]


def as_log_event(row: dict) -> dict:
    """An events row in the shape of the API's log events ({timestamp, level, source, message})."""
    return {"timestamp": row["timestamp"], "level": LEVEL_OF_SEVERITY.get(row["severity"], row["severity"].upper()),
            "source": row.get("source") or row["event_type"], "message": row["message"]}


def with_starts(current: list[dict], stored: dict[str, str]) -> list[dict]:
    """`current` alerts, each `since` the earlier of its rule's time and when it was first recorded."""
    result = []
    for alert in current:
        candidates = [t for t in (alert.get("since"), stored.get(alert["id"])) if t]
        result.append({**alert, "since": min(candidates) if candidates else None})
    return result


def alert_starts(conn: sqlite3.Connection) -> dict[str, str]:
    """{alert id: since} of the alerts recorded as active."""
    return {r["id"]: r["since"] for r in conn.execute("SELECT id, since FROM alerts")}


def sync_alerts(conn: sqlite3.Connection, current: list[dict]) -> list[dict]:
    """Make the active-alerts table match `current`; record raised/cleared events; return alerts with `since`.

    An alert's `since` is the earliest of the time its rule gives and the time it was first seen. Writes
    only when something changed.
    """
    now = utc_now()
    recorded = {r["id"]: (r["severity"], r["message"], r["since"])
                for r in conn.execute("SELECT id, severity, message, since FROM alerts")}
    merged = with_starts(current, {k: since for k, (_, _, since) in recorded.items()})
    if {a["id"]: (a["severity"], a["message"], a["since"]) for a in merged} == recorded:
        return merged
    with transaction(conn):
        stored = {r["id"]: dict(r) for r in conn.execute("SELECT id, severity, source, message, since FROM alerts")}
        result = []
        for alert in current:
            previous = stored.pop(alert["id"], None)
            candidates = [t for t in (alert.get("since"), previous and previous["since"]) if t]
            since = min(candidates) if candidates else now
            result.append({**alert, "since": since})
            if previous is None:
                conn.execute("INSERT INTO alerts (id, severity, source, message, since) VALUES (?, ?, ?, ?, ?)",
                             (alert["id"], alert["severity"], alert["source"], alert["message"], since))
                _alert_event(conn, now, "alert_raised", alert, f"alert raised: {alert['message']}")
            elif (previous["severity"], previous["message"], previous["since"]) != (alert["severity"], alert["message"], since):
                conn.execute("UPDATE alerts SET severity = ?, message = ?, since = ? WHERE id = ?",
                             (alert["severity"], alert["message"], since, alert["id"]))
        for gone in stored.values():
            conn.execute("DELETE FROM alerts WHERE id = ?", (gone["id"],))
            _alert_event(conn, now, "alert_cleared", {**gone, "severity": "info"}, f"alert cleared: {gone['message']}")
    return result


def _alert_event(conn: sqlite3.Connection, now: str, event_type: str, alert: dict, message: str) -> None:
    insert_events(conn, [dict(
        timestamp=now, event_type=event_type, message=message, source="alerts",
        agent_id=alert["source"] if alert["source"].startswith("agent_") else None,
        severity=alert["severity"] if alert["severity"] in SEVERITIES else "warning",
        metadata={"alert_id": alert["id"]})])
