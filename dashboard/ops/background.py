"""Background writers that run in one process at a time: every gunicorn worker starts one thread per
job, and only the thread holding `<DATABASE_PATH>.<name>.lock` (flock) does the work; another takes
over within one interval when the leader dies (the kernel releases the lock with its holder).

A process that forks (gunicorn's master under --preload) hands its loops to its children: they stop
before the fork, closing their connection and lock so no child inherits them, and each child starts
its own.
"""
from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Optional

import database


class LeaderLoop:
    """Calls `tick(conn)` every `interval` s (aligned to the wall clock) while this process leads `name`."""

    name = "loop"  # the lock file's and the thread's name
    label = "background loop"  # how the log names it

    def __init__(self, db_path: Path, interval: float):
        self.db_path, self.interval = Path(db_path), interval
        self.log = logging.getLogger(type(self).__module__)
        self._lock_file = None
        self._thread: Optional[threading.Thread] = None

    def tick(self, conn: sqlite3.Connection) -> None:
        """One round of work, as the leader, on this loop's own connection."""
        raise NotImplementedError

    def start(self) -> "LeaderLoop":
        """Start the background thread."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        _running.add(self)
        return self

    def stop(self, timeout: float = 5) -> None:
        """Stop the thread and give up leadership."""
        _running.discard(self)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def is_leader(self) -> bool:
        """Whether this process holds the lock."""
        return self._lock_file is not None

    def _try_lead(self) -> bool:
        if self._lock_file is None:
            handle = open(f"{self.db_path}.{self.name}.lock", "a+")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                return False
            self._lock_file = handle
            self.log.info("%s: this process is the leader (every %ss)", self.label, self.interval)
        return True

    def _run(self) -> None:
        conn = None
        try:
            while not self._stop.wait(self.interval - time.time() % self.interval):
                try:
                    if not self._try_lead():
                        continue
                    conn = conn or database.connect(self.db_path)
                    self.tick(conn)
                except (sqlite3.Error, OSError) as err:
                    self.log.warning("%s: %s", self.label, err)
                    if conn is not None:
                        conn.close()
                    conn = None
                except Exception:  # noqa: BLE001 - one bad round must not end the loop
                    self.log.exception("%s: round failed", self.label)
        finally:
            if conn is not None:
                conn.close()
            if self._lock_file is not None:
                self._lock_file.close()
                self._lock_file = None


_running: set[LeaderLoop] = set()
_handed_to_children: list[LeaderLoop] = []


def _before_fork() -> None:
    for loop in list(_running):
        loop.stop()
        _handed_to_children.append(loop)


def _after_fork_in_child() -> None:
    for loop in _handed_to_children:
        loop.start()
    _handed_to_children.clear()


os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)
