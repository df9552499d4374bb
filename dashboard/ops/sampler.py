"""The psutil health sampler: one leader across all gunicorn workers (background.LeaderLoop)."""
from __future__ import annotations

import logging
import sqlite3
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Optional

import database
from dashboard.ops import host_health as health
from dashboard.ops.background import LeaderLoop
from dashboard.timestamps import to_iso

log = logging.getLogger(__name__)

SAMPLE_COLUMNS = ("cpu_percent", "memory_percent", "disk_percent", "uptime_seconds", "active_connections")
PRUNE_EVERY_SECONDS = 3600
CHECKPOINT_EVERY_SECONDS = 60
CPU_ALERT_WINDOW_SECONDS = 300


def store_sample(conn: sqlite3.Connection, sample: dict) -> None:
    """Insert one health reading (health.read_sample's shape) into system_health."""
    with database.transaction(conn):
        conn.execute(
            "INSERT INTO system_health (timestamp, cpu_percent, memory_percent, disk_percent, uptime_seconds,"
            " active_connections) VALUES (?, ?, ?, ?, ?, ?)",
            (sample["timestamp"], *(sample.get(c) for c in SAMPLE_COLUMNS)))


def recent_average(conn: sqlite3.Connection, column: str, seconds: int,
                   now: Optional[datetime] = None) -> Optional[float]:
    """The mean of `column` over the samples of the `seconds` before `now` (default: the wall clock), or None."""
    if column not in SAMPLE_COLUMNS:
        raise ValueError(f"unknown health column {column!r}")
    since = to_iso((now or datetime.now(timezone.utc)) - timedelta(seconds=seconds))
    row = conn.execute(f"SELECT AVG({column}) FROM system_health WHERE timestamp >= ?", (since,)).fetchone()
    return None if row[0] is None else round(row[0], 1)


def alert_sample(conn: sqlite3.Connection, disk_path: str, now: Optional[datetime] = None) -> dict:
    """A live reading for the host alerts, its CPU the mean of the stored samples of the last
    CPU_ALERT_WINDOW_SECONDS when the sampler runs (a load, not one spike)."""
    sample = health.current(disk_path)
    cpu = recent_average(conn, "cpu_percent", CPU_ALERT_WINDOW_SECONDS, now=now)
    return sample if cpu is None else {**sample, "cpu_percent": cpu}


def history(conn: sqlite3.Connection, hours: int, max_points: int = 720,
            now: Optional[datetime] = None) -> list[dict]:
    """Readings of the `hours` before `now` (default: the wall clock), oldest first, averaged into at
    most `max_points` equal buckets."""
    since = (now or datetime.now(timezone.utc)) - timedelta(hours=hours)
    bucket = max(1, (hours * 3600) // max_points)
    rows = conn.execute(
        "SELECT MAX(timestamp) AS timestamp, ROUND(AVG(cpu_percent), 1) AS cpu_percent,"
        " ROUND(AVG(memory_percent), 1) AS memory_percent, ROUND(AVG(disk_percent), 1) AS disk_percent,"
        " MAX(uptime_seconds) AS uptime_seconds, CAST(ROUND(AVG(active_connections)) AS INTEGER) AS active_connections"
        " FROM system_health WHERE timestamp >= ?"
        " GROUP BY CAST(strftime('%s', timestamp) AS INTEGER) / ? ORDER BY 1",
        (to_iso(since), bucket)).fetchall()
    return [dict(r) for r in rows]


def prune(conn: sqlite3.Connection, retention_days: int, now: Optional[datetime] = None) -> int:
    """Delete readings older than `retention_days` before `now` (default: the wall clock); return how many went."""
    cutoff = to_iso((now or datetime.now(timezone.utc)) - timedelta(days=retention_days))
    with database.transaction(conn):
        return conn.execute("DELETE FROM system_health WHERE timestamp < ?", (cutoff,)).rowcount


class Sampler(LeaderLoop):
    """Every `interval` s, as the leader, store one reading and run `on_sample`; prune old readings hourly
    and checkpoint the WAL every minute."""

    name, label = "sampler", "health sampler"

    def __init__(self, db_path: Path, interval: int, retention_days: int, disk_path: str = "/",
                 on_sample: Optional[Callable[[sqlite3.Connection, dict], None]] = None):
        super().__init__(db_path, interval)
        self.retention_days, self.disk_path, self.on_sample = retention_days, disk_path, on_sample
        self._last_prune, self._last_checkpoint = float("-inf"), time.monotonic()

    def tick(self, conn: sqlite3.Connection) -> None:
        """Store a reading, then prune and checkpoint when due."""
        sample = health.read_sample(self.disk_path)
        store_sample(conn, sample)
        if self.on_sample is not None:
            try:
                self.on_sample(conn, sample)
            except Exception:  # noqa: BLE001 - a failing callback must not end sampling
                log.exception("health sampler: on_sample failed")
        if time.monotonic() - self._last_prune > PRUNE_EVERY_SECONDS:
            prune(conn, self.retention_days)
            self._last_prune = time.monotonic()
        if time.monotonic() - self._last_checkpoint > CHECKPOINT_EVERY_SECONDS:
            database.checkpoint(conn)  # empties the WAL even when readers never pause (checkpoint starvation)
            self._last_checkpoint = time.monotonic()
