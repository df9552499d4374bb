"""The audit: every POST under /api/ as an `api_write` event (dashboard/web/audit.py records them), and
GET /api/system/audit's reading of them. The recent-logs views leave these events out."""
from __future__ import annotations

import json
import sqlite3
from typing import Optional

import database
from dashboard.store.events import insert_events

EVENT_TYPE = "api_write"
AUDIT_PATH = "/api/system/audit"  # its cached answers end with each audit row (every worker's)
MAX_PATH = 200


def record(conn: sqlite3.Connection, key: Optional[str], client: Optional[str], method: str, path: str,
           status: int) -> None:
    """Store one write in its own transaction (see `insert`)."""
    # The provider never reads these (newest_events leaves them out): no need to tell its caches.
    with database.transaction(conn, read_by_provider=False):
        insert(conn, key, client, method, path, status)


def insert(conn: sqlite3.Connection, key: Optional[str], client: Optional[str], method: str, path: str,
           status: int) -> int:
    """Store one write inside the caller's transaction: the key's name (anonymous, or None for no valid key),
    client address, method, path, status; return its row id (for `correct`)."""
    message, severity, entry = _fields(key, client, method, path, status)
    insert_events(conn, [dict(event_type=EVENT_TYPE, message=message, source="audit", metadata=entry,
                              severity=severity)])
    row_id = conn.execute("SELECT last_insert_rowid()").fetchone()[0]
    conn.execute(database.BUMP_SQL, (AUDIT_PATH,))
    return row_id


def correct(conn: sqlite3.Connection, row_id: int, key: Optional[str], client: Optional[str], method: str,
            path: str, status: int) -> None:
    """Rewrite a stored write whose answer turned out other than first recorded."""
    with database.transaction(conn, read_by_provider=False):
        message, severity, entry = _fields(key, client, method, path, status)
        conn.execute("UPDATE events SET message = ?, severity = ?, metadata = ? WHERE id = ? AND event_type = ?",
                     (message, severity, json.dumps(entry), row_id, EVENT_TYPE))
        conn.execute(database.BUMP_SQL, (AUDIT_PATH,))


def _fields(key: Optional[str], client: Optional[str], method: str, path: str, status: int) -> tuple:
    """(message, severity, metadata) of one write."""
    path = path if len(path) <= MAX_PATH else path[:MAX_PATH] + "..."
    entry = {"key": key, "client": client, "method": method, "path": path, "status": status}
    message = f"{method} {path} answered {status} to {key or 'no valid key'} from {client or 'unknown'}"
    return message, "info" if status < 400 else "warning", entry


def entries(conn: sqlite3.Connection, limit: int) -> list[dict]:
    """The newest `limit` writes, newest first (contract.AuditEntry)."""
    rows = conn.execute("SELECT timestamp, metadata FROM events WHERE event_type = ?"
                        " ORDER BY timestamp DESC, id DESC LIMIT ?", (EVENT_TYPE, limit)).fetchall()
    result = []
    for row in rows:
        entry = json.loads(row["metadata"] or "{}")
        result.append({"timestamp": row["timestamp"], "key": entry.get("key"), "client": entry.get("client"),
                       "method": entry.get("method", "POST"), "path": entry.get("path", ""),
                       "status": int(entry.get("status", 0))})
    return result
