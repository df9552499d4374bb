"""The cache generations as every worker reads them: the cache_generations counters (written by database.py's
transactions and bump_generations) read back per database, so a cached answer is replayed only while the
counters of its path are unchanged (dashboard/web/response_cache.py, the cloud cache), and the provider's
kept derivations only while READS_COUNTER is (dashboard/local/provider.py)."""
from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from pathlib import Path

import database

log = logging.getLogger(__name__)


class Generations:
    """The cache_generations counters of one database, as this process last read them.

    Each thread reads them on a connection of its own that never writes, so `PRAGMA data_version` (unchanged
    until another connection, of any process, commits; no disk read) tells whether the table must be read
    again. No lock is held around SQLite: a lock held while a call gives up the GIL turns every serving
    thread of a worker into a queue (measured: 3x fewer answers a second under 16 connections). Opened on
    first use, in the process that serves (never in a --preload master). stamp() is None while the database
    cannot be read: the caches then fall back to their TTL alone.
    """

    RETRY_SECONDS = 1.0  # after a failure, how long stamp() answers None before trying to connect again

    def __init__(self, path: Path | str):
        self.path = str(path)
        self._local = threading.local()
        self._retry_at = 0.0

    def stamp(self, path: str) -> int | None:
        """The sum of the counters of every prefix of `path` (it only grows); None when unreadable."""
        rows = self._current()
        return None if rows is None else sum(value for prefix, value in rows if path.startswith(prefix))

    def reads_version(self) -> tuple | None:
        """A token that changes whenever a commit changes what the provider reads (database.READS_COUNTER);
        None while it cannot be read."""
        rows = self._current()
        return None if rows is None else (self._local.opened_as, dict(rows).get(database.READS_COUNTER, 0))

    def _current(self) -> tuple[tuple[str, int], ...] | None:
        local = self._local
        conn = getattr(local, "conn", None)
        try:
            if conn is None or conn.pid != os.getpid():
                if time.monotonic() < self._retry_at:
                    return None
                conn = local.conn = database.connect(self.path)
                conn.execute("PRAGMA busy_timeout = 100")  # a request never waits long for this
                # The file it was opened on (a database restored under the same name is another one).
                local.opened_as, local.version = conn.opened_as, None
            version = conn.execute("PRAGMA data_version").fetchone()[0]  # before the read below
            if version != local.version:
                rows = conn.execute("SELECT prefix, value FROM cache_generations").fetchall()
                local.rows = tuple(tuple(row) for row in rows)
                local.version = version
            return local.rows
        except (sqlite3.Error, OSError) as err:
            log.debug("cache generations unreadable (caches use their TTL alone): %s", err)
            if conn is not None:
                conn.close()
            local.conn, self._retry_at = None, time.monotonic() + self.RETRY_SECONDS
            return None


_generations: dict[str, Generations] = {}
_generations_lock = threading.Lock()


def generations(path: Path | str) -> Generations:
    """This process's one Generations of the database at `path` (shared by its caches)."""
    with _generations_lock:
        return _generations.setdefault(str(path), Generations(path))
