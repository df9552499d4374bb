"""SQLite the flaskr way: `get_db()` lends each request its thread's connection on `g`; WAL, busy_timeout, transactions
that take the write lock up front, migrations, `?` placeholders only."""
from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sqlite3
import threading
import time
import weakref
from pathlib import Path

import click
from flask import Flask, current_app, g, has_request_context

from dashboard.web.errors import error_response
from dashboard.store.migrations import MIGRATIONS, SCHEMA_FILE, SCHEMA_VERSION

log = logging.getLogger(__name__)


class DatabaseUnavailable(Exception):
    """The database cannot be opened or written (missing dir, read-only, disk full, locked)."""


class Connection(sqlite3.Connection):
    """A connection from connect(): counted in the registry of open connections until closed."""

    def __init__(self, path, *args, **kwargs):
        super().__init__(path, *args, **kwargs)
        self.pid, self.path = os.getpid(), os.path.abspath(path)
        self.busy_seconds = kwargs.get("timeout", 5.0)
        self.opened_as = _file_state(path)
        with _registry_lock:
            _registry.add(self)

    def close(self) -> None:
        with _registry_lock:
            _registry.discard(self)
        super().close()


_registry: "weakref.WeakSet[Connection]" = weakref.WeakSet()
_registry_lock = threading.Lock()

# This process's writers of each database file take turns here before BEGIN IMMEDIATE: a thread waiting for
# another of its process is woken the moment that one commits, instead of sleeping in SQLite's busy handler
# (1, 2, 5, 10 ... ms) while the lock is long free. Writers of other processes still meet in SQLite.
_writers: dict[str, threading.RLock] = {}
os.register_at_fork(after_in_child=_writers.clear)


def open_connections() -> list[tuple[int, str]]:
    """(opening pid, file) of every connect() connection in this process's memory not yet closed.

    A forked child inherits its parent's: right after a fork, the list is what the parent had open."""
    with _registry_lock:
        return [(conn.pid, conn.path) for conn in _registry]


def connect(path: Path | str, busy_timeout: float = 5.0) -> sqlite3.Connection:
    """Open `path` with the project's pragmas, waiting up to `busy_timeout` seconds for a lock; autocommit,
    so writers use `transaction()`."""
    conn = sqlite3.connect(str(path), timeout=busy_timeout, isolation_level=None, check_same_thread=False,
                           factory=Connection)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
    # Turning a new file to WAL takes an exclusive lock that SQLite does not wait for (busy_timeout does
    # not apply): when several processes open a new file at once, retry for as long as busy_timeout.
    deadline = time.monotonic() + busy_timeout
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            break
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) or time.monotonic() > deadline:
                conn.close()
                raise
            time.sleep(0.01)
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


# Writes that never pause (several processes) under a reader that always holds a snapshot starve the
# automatic PASSIVE checkpoints: they never reach the end of the WAL, so it is never reset and grows without
# bound. Past this size (4x the autocheckpoint's 1000 pages) the next writer truncates it before writing.
WAL_LIMIT_BYTES = 16 * 1024 * 1024
# How long checkpoint() keeps trying. A writer that found the WAL past the limit waits this long at most
# (a reader holding one snapshot longer), then writes anyway: well below busy_timeout.
CHECKPOINT_WAIT_MS = 1000


# The cache_generations row counted by every commit that changes what the provider reads (no path starts
# with ":"): the provider's kept derivations hold while it is unchanged, so writes it never reads
# (storyboard projects, rate-limit counts, the counters themselves) do not make every worker recompute.
READS_COUNTER = ":reads"
COUNT_READS_SQL = ("INSERT INTO cache_generations (prefix, value) VALUES ('" + READS_COUNTER + "', 1)"
                   " ON CONFLICT (prefix) DO UPDATE SET value = value + 1")


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection, read_by_provider: bool = True):
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error): writers take the lock up front, never mid-way.

    Counts the commit in READS_COUNTER unless `read_by_provider` is False (only for tables the provider's
    kept derivations never read). A writer that finds the WAL past WAL_LIMIT_BYTES checkpoints and
    truncates it first (see checkpoint)."""
    path = getattr(conn, "path", "")
    turn = _writers.get(path) or _writers.setdefault(path, threading.RLock())
    if not turn.acquire(timeout=getattr(conn, "busy_seconds", 5.0)):
        raise sqlite3.OperationalError("database is locked (by another writer of this process)")
    try:
        with _immediate(conn, read_by_provider) as locked:
            yield locked
    finally:
        turn.release()


@contextlib.contextmanager
def _immediate(conn: sqlite3.Connection, read_by_provider: bool):
    conn.execute("BEGIN IMMEDIATE")
    if _wal_size(conn) > WAL_LIMIT_BYTES:  # checked under the write lock: nobody appends past the limit
        conn.execute("ROLLBACK")
        checkpoint(conn)
        conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        if read_by_provider:
            _count_reads(conn)
        rode = _carry_riders(conn)
    except BaseException:
        if conn.in_transaction:  # SQLite may have rolled back already (disk full): keep the real error
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    if rode:
        _riders_committed(rode)


def _count_reads(conn: sqlite3.Connection) -> None:
    try:
        conn.execute(COUNT_READS_SQL)
    except sqlite3.OperationalError as err:
        if "no such table" not in str(err):  # a database not yet migrated has no readers to tell
            raise


def _wal_size(conn: sqlite3.Connection) -> int:
    path = getattr(conn, "path", None) or conn.execute("PRAGMA database_list").fetchone()[2]
    try:
        return os.stat(f"{path}-wal").st_size if path else 0
    except OSError:
        return 0


def checkpoint(conn: sqlite3.Connection, wait_ms: int = CHECKPOINT_WAIT_MS) -> bool:
    """Copy the WAL into the database and truncate it, trying for at most `wait_ms`; True when done."""
    # Retried here, with no busy handler: SQLite's handler would keep waiting on the lock of the snapshot a
    # reader held when the attempt began, which a reader that never pauses takes again microseconds after
    # leaving it. A fresh attempt sees the reader's newer snapshot; once everything is copied, the reader's
    # next snapshot reads the database file alone and no longer stands in the way. Another checkpoint (the
    # automatic one after a commit) makes an attempt busy at once, too.
    deadline = time.monotonic() + wait_ms / 1000
    try:
        timeout = conn.execute("PRAGMA busy_timeout").fetchone()[0]
        conn.execute("PRAGMA busy_timeout = 0")
        try:
            while conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]:
                if time.monotonic() > deadline:
                    log.info("WAL checkpoint gave up after %d ms: writers or a reader's snapshot held it", wait_ms)
                    return False
                time.sleep(0.001)
            return True
        finally:
            conn.execute(f"PRAGMA busy_timeout = {int(timeout)}")
    except sqlite3.Error as err:  # never fail the write that asked for it
        log.debug("WAL checkpoint failed: %s", err)
        return False


def migrate(path: Path | str) -> int:
    """Create or upgrade the database at `path` to SCHEMA_VERSION; return the version found before."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # One process migrates; the others wait on the lock and then find nothing to do.
    with open(f"{path}.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        conn = connect(path)
        try:
            with transaction(conn):
                before = conn.execute("PRAGMA user_version").fetchone()[0]
                if before < 1:  # a new database: the current schema at once
                    _execute_all(conn, SCHEMA_FILE.read_text(encoding="utf-8"))
                else:
                    for version in range(before, SCHEMA_VERSION):
                        _execute_all(conn, MIGRATIONS[version - 1])
                if before != SCHEMA_VERSION:
                    conn.execute(f"PRAGMA user_version = {int(SCHEMA_VERSION)}")
                    log.info("database %s migrated from version %d to %d", path, before, SCHEMA_VERSION)
        finally:
            conn.close()
    return before


def _execute_all(conn: sqlite3.Connection, script: str) -> None:
    """Each statement of `script`, in the caller's transaction (executescript would commit). A piece ends at a
    ";" that SQLite calls the end of a complete statement, so a trigger's body stays whole."""
    statement = ""
    for piece in script.split(";"):
        statement += piece + ";"
        if sqlite3.complete_statement(statement):
            if statement.strip(" \n;"):
                conn.execute(statement)
            statement = ""
    if statement.strip(" \n;"):
        conn.execute(statement)


def get_db() -> sqlite3.Connection:
    """The request's connection: this thread's own, opened on first use and kept for its next requests."""
    if "db" not in g:
        try:
            if not current_app.extensions.get("database_migrated"):
                _migrate_app(current_app)  # start-up could not; the disk may be back
            g.db = _thread_connection(current_app.config["DATABASE_PATH"])
        except (sqlite3.Error, OSError) as err:
            raise DatabaseUnavailable(str(err)) from err
    return g.db


def close_db(exc=None) -> None:
    """End the request's use of its connection: nothing left open in it; closed after a database error."""
    db = g.pop("db", None)
    if db is None:
        return
    try:
        if db.in_transaction:
            db.execute("ROLLBACK")
    except sqlite3.Error:
        exc = exc or True
    if isinstance(exc, sqlite3.Error) or exc is True:
        _forget_thread_connection(db)


# Opening a connection (and its WAL files) costs about as much as a small request: each serving thread
# keeps one per database, for the few databases it used last (tests open many).
_THREAD_CONNECTIONS = 4
_threads = threading.local()


def _thread_connection(path: Path | str) -> sqlite3.Connection:
    conns = _threads.__dict__.setdefault("conns", {})
    key = (os.getpid(), os.path.abspath(path))
    conn = conns.pop(key, None)
    if conn is not None and conn.opened_as != _file_state(path):  # replaced, deleted or made read-only
        conn.close()
        conn = None
    conns[key] = conn or connect(path)
    while len(conns) > _THREAD_CONNECTIONS:
        old = conns.pop(next(iter(conns)))
        if old.pid == os.getpid():
            old.close()
    return conns[key]


def _forget_thread_connection(conn: sqlite3.Connection) -> None:
    getattr(_threads, "conns", {}).pop((conn.pid, conn.path), None)
    conn.close()


def _file_state(path: Path | str) -> tuple | None:
    """(inode, writable by this process): a connection opened on another state acts unlike a new one."""
    try:
        return os.stat(path).st_ino, os.access(path, os.W_OK, effective_ids=os.access in os.supports_effective_ids)
    except OSError:
        return None


def ping() -> bool:
    """True when the database answers a query."""
    try:
        get_db().execute("SELECT 1 FROM storyboard_projects LIMIT 1").fetchall()
        return True
    except (sqlite3.Error, DatabaseUnavailable):
        return False


# Below this much free space the next write may fail (SQLITE_FULL): readiness says so first.
MIN_FREE_BYTES = 8 * 1024 * 1024


def write_problem(path: Path | str) -> str | None:
    """Why the database at `path` could not take a write now (its folder or file not writable, the disk
    nearly full), or None; checked without writing."""
    path = Path(path)
    for target in (path.parent, path):
        if target.exists() and not os.access(target, os.W_OK):
            return f"{target} is not writable"
    stats = os.statvfs(path.parent)
    if stats.f_bavail * stats.f_frsize < MIN_FREE_BYTES:
        return f"less than {MIN_FREE_BYTES // (1024 * 1024)} MiB free on the database's disk"
    return None


# --- cache generations: what every worker's caches check before replaying an answer (counted here, with the
# writes; read back by dashboard/store/generations.py) ---

GENERATIONS_RIDER = "cache generations"
BUMP_SQL = "INSERT INTO cache_generations (prefix, value) VALUES (?, 1) ON CONFLICT (prefix) DO UPDATE SET value = value + 1"


def bump_generations(conn: sqlite3.Connection, prefixes: tuple[str, ...]) -> None:
    """Count one write under each path prefix: cached answers of paths under them are no longer valid."""
    with transaction(conn, read_by_provider=False):
        conn.executemany(BUMP_SQL, [(p,) for p in prefixes])


def bump_with_the_requests_write(prefixes: tuple[str, ...]) -> None:
    """Count the prefixes in the same commit as this request's next write on its connection (get_db()), so
    the write and the end of the cached answers it changes show together."""
    ride_with_the_requests_write(GENERATIONS_RIDER, lambda conn: conn.executemany(BUMP_SQL, [(p,) for p in prefixes]))


def commit_pending_generations() -> None:
    """Count now what this request asked to bump and no write of its counted (its write went through
    another connection, or upstream in cloud mode)."""
    bump = g.get("write_riders", {}).pop(GENERATIONS_RIDER, None)
    if bump is not None:
        with transaction(get_db(), read_by_provider=False) as conn:  # other riders (the audit's) ride along
            bump(conn)  # not as a rider: its failure is this call's


def ride_with_the_requests_write(name: str, rider) -> None:
    """Run `rider(conn)` inside the commit of this request's next write on its connection (get_db()), in a
    savepoint: a rider that fails never costs the write, and stays pending for the next one. Once
    committed, `carried(name)` is what it returned."""
    g.setdefault("write_riders", {})[name] = rider


def carried(name: str):
    """What the rider `name` of this request returned, once committed with a write; else None."""
    return g.get("carried_riders", {}).get(name)


def drop_rider(name: str) -> None:
    """Forget the rider `name` of this request if it is still pending."""
    g.get("write_riders", {}).pop(name, None)


def _carry_riders(conn: sqlite3.Connection) -> dict:
    """Run the request's pending riders in this transaction: {name: result} of those that ran."""
    if not (has_request_context() and g.get("write_riders") and g.get("db") is conn):
        return {}
    results = {}
    for name, rider in list(g.write_riders.items()):
        conn.execute("SAVEPOINT rider")
        try:
            results[name] = rider(conn)
        except sqlite3.Error as err:
            conn.execute("ROLLBACK TO rider")
            log.debug("%s not written with the request's write (tried again after it): %s", name, err)
        conn.execute("RELEASE rider")
    return results


def _riders_committed(results: dict) -> None:
    for name, result in results.items():
        g.write_riders.pop(name, None)
        g.setdefault("carried_riders", {})[name] = result


def _unavailable(err: Exception):
    log.error("database error: %s", err)
    return error_response(503, f"database unavailable: {err}")


@click.command("init-db")
def init_db_command() -> None:
    """Create or upgrade the database to the current schema."""
    before = migrate(current_app.config["DATABASE_PATH"])
    click.echo(f"database at version {SCHEMA_VERSION} (was {before})")


def init_app(app: Flask) -> None:
    """Migrate the database at start-up (a failure is logged; reads from files keep working)."""
    app.teardown_appcontext(close_db)
    app.cli.add_command(init_db_command)
    app.register_error_handler(sqlite3.Error, _unavailable)
    app.register_error_handler(DatabaseUnavailable, _unavailable)
    try:
        _migrate_app(app)
    except (OSError, sqlite3.Error) as err:
        log.error("database %s unavailable: %s", app.config["DATABASE_PATH"], err)


def _migrate_app(app: Flask) -> None:
    migrate(app.config["DATABASE_PATH"])
    app.extensions["database_migrated"] = True
