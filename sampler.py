"""The psutil health sampler: one leader across all gunicorn workers, elected with flock."""
from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Optional

import database
import health

log = logging.getLogger(__name__)

SAMPLE_COLUMNS = ("cpu_percent", "memory_percent", "disk_percent", "uptime_seconds", "active_connections")
PRUNE_EVERY_SECONDS = 3600
CHECKPOINT_EVERY_SECONDS = 60


def store_sample(conn: sqlite3.Connection, sample: dict) -> None:
    """Insert one health reading (health.read_sample's shape) into system_health."""
    with database.transaction(conn):
        conn.execute(
            "INSERT INTO system_health (timestamp, cpu_percent, memory_percent, disk_percent, uptime_seconds,"
            " active_connections) VALUES (?, ?, ?, ?, ?, ?)",
            (sample["timestamp"], *(sample.get(c) for c in SAMPLE_COLUMNS)))


def latest_sample(conn: sqlite3.Connection) -> Optional[dict]:
    """The newest stored reading, or None."""
    row = conn.execute(f"SELECT timestamp, {', '.join(SAMPLE_COLUMNS)} FROM system_health"
                       " ORDER BY timestamp DESC, id DESC LIMIT 1").fetchone()
    return dict(row) if row else None


def recent_average(conn: sqlite3.Connection, column: str, seconds: int,
                   now: Optional[datetime] = None) -> Optional[float]:
    """The mean of `column` over the samples of the `seconds` before `now` (default: the wall clock), or None."""
    if column not in SAMPLE_COLUMNS:
        raise ValueError(f"unknown health column {column!r}")
    since = ((now or datetime.now(timezone.utc)) - timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")
    row = conn.execute(f"SELECT AVG({column}) FROM system_health WHERE timestamp >= ?", (since,)).fetchone()
    return None if row[0] is None else round(row[0], 1)


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
        (since.strftime("%Y-%m-%dT%H:%M:%SZ"), bucket)).fetchall()
    return [dict(r) for r in rows]


def prune(conn: sqlite3.Connection, retention_days: int, now: Optional[datetime] = None) -> int:
    """Delete readings older than `retention_days` before `now` (default: the wall clock); return how many went."""
    cutoff = ((now or datetime.now(timezone.utc)) - timedelta(days=retention_days)).strftime("%Y-%m-%dT%H:%M:%SZ")
    with database.transaction(conn):
        return conn.execute("DELETE FROM system_health WHERE timestamp < ?", (cutoff,)).rowcount


class Sampler:
    """Every `interval` s, if this process holds the leader lock, store one reading and run `on_sample`.

    Every worker runs a Sampler thread; only the one holding `<db>.sampler.lock` samples, and another
    takes over within one interval when the leader dies. Ticks are aligned to the wall clock.
    """

    def __init__(self, db_path: Path, interval: int, retention_days: int, disk_path: str = "/",
                 on_sample: Optional[Callable[[sqlite3.Connection, dict], None]] = None):
        self.db_path, self.interval, self.retention_days = Path(db_path), interval, retention_days
        self.disk_path, self.on_sample = disk_path, on_sample
        self._lock_file = None

    def start(self) -> "Sampler":
        """Start the background thread."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="health-sampler", daemon=True)
        self._thread.start()
        _running.add(self)
        return self

    def stop(self, timeout: float = 5) -> None:
        """Stop the thread and give up leadership."""
        _running.discard(self)
        self._stop.set()
        self._thread.join(timeout)

    @property
    def is_leader(self) -> bool:
        """Whether this process holds the sampler lock."""
        return self._lock_file is not None

    def _try_lead(self) -> bool:
        if self._lock_file is None:
            handle = open(f"{self.db_path}.sampler.lock", "a+")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                return False
            self._lock_file = handle
            log.info("health sampler: this process is the leader (every %ss)", self.interval)
        return True

    def _run(self) -> None:
        conn, last_prune, last_checkpoint = None, 0.0, time.monotonic()
        try:
            while not self._stop.wait(self.interval - time.time() % self.interval):
                try:
                    if not self._try_lead():
                        continue
                    conn = conn or database.connect(self.db_path)
                    sample = health.read_sample(self.disk_path)
                    store_sample(conn, sample)
                    if self.on_sample is not None:
                        try:
                            self.on_sample(conn, sample)
                        except Exception:  # noqa: BLE001 - a failing callback must not end sampling
                            log.exception("health sampler: on_sample failed")
                    if time.monotonic() - last_prune > PRUNE_EVERY_SECONDS:
                        prune(conn, self.retention_days)
                        last_prune = time.monotonic()
                    if time.monotonic() - last_checkpoint > CHECKPOINT_EVERY_SECONDS:
                        # Empties the WAL even when readers never pause (checkpoint starvation).
                        database.checkpoint(conn)
                        last_checkpoint = time.monotonic()
                except (sqlite3.Error, OSError) as err:
                    log.warning("health sampler: %s", err)
                    if conn is not None:
                        conn.close()
                    conn = None
        finally:
            if conn is not None:
                conn.close()
            if self._lock_file is not None:
                self._lock_file.close()
                self._lock_file = None


# A process that forks (gunicorn's master under --preload) hands its samplers to its children: they stop
# before the fork, closing their connection and lock so no child inherits them, and each child starts its own.
_running: set[Sampler] = set()
_handed_to_children: list[Sampler] = []


def _before_fork() -> None:
    for sampler in list(_running):
        sampler.stop()
        _handed_to_children.append(sampler)


def _after_fork_in_child() -> None:
    for sampler in _handed_to_children:
        sampler.start()
    _handed_to_children.clear()


os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)
