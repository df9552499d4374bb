"""Named API keys in SQLite: created, listed and revoked by the `flask keys` commands (dashboard/web/keys_cli.py),
checked on every request through a KeyRing.

A key is `dsk_<key id>_<secret>`: the key id (12 hex digits) is public and finds the row; the secret is
secrets.token_urlsafe(32), 256 random bits. The row holds a random salt and SHA-256(salt + key), never the
key. A fast hash is enough here: nobody can guess 256 random bits, so a slow hash (scrypt, bcrypt) would
cost every request milliseconds and buy nothing; it matters for passwords people choose, not for these.
The hash is compared with hmac.compare_digest, and an unknown key id is compared against a dummy hash, so
an answer takes as long whichever character of a wrong key differs (bench/key_timing.py measures it).
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
import sqlite3
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import NamedTuple, Optional

import database
from dashboard.timestamps import to_iso, utc_now

log = logging.getLogger(__name__)

PREFIX = "dsk_"
KEY_ID_CHARS = 12
SCOPES = ("read", "operate", "admin")
RANK = {scope: rank for rank, scope in enumerate(SCOPES)}
# Names the audit uses for callers that are no row: API_KEY (an admin key) and anyone while no key exists.
RESERVED_NAMES = ("API_KEY", "anonymous")
NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_DUMMY_SALT = secrets.token_bytes(16)
_DUMMY_HASH = hashlib.sha256(_DUMMY_SALT + b"no such key").digest()
_DUMMY_ROW = ("", "", _DUMMY_SALT, _DUMMY_HASH, "read", None, None)


class Key(NamedTuple):
    """A key as a request sees it once checked: its name and scope."""

    name: str
    scope: str


def allows(have: str, need: str) -> bool:
    """Whether a key of scope `have` may do what needs scope `need` (read < operate < admin)."""
    return RANK[have] >= RANK[need]


def digest(salt: bytes, key: str) -> bytes:
    """SHA-256 of the salt and the key as sent (latin-1: the bytes of the header)."""
    return hashlib.sha256(salt + key.encode("latin-1", errors="replace")).digest()


def key_id_of(key: str) -> Optional[str]:
    """The public key id of a key of our form, else None."""
    end = len(PREFIX) + KEY_ID_CHARS
    # every test made, whichever fails (`&`, not `and`): the time does not tell which part is wrong
    well_formed = (key[:len(PREFIX)] == PREFIX) & (len(key) >= end + 2) & (key[end:end + 1] == "_")
    return key[len(PREFIX):end] if well_formed else None


def create(conn: sqlite3.Connection, name: str, scope: str, expires_days: Optional[float] = None) -> str:
    """Store a new key named `name` and return it (the only time it is seen); ValueError for a bad or
    taken name, an unknown scope or a non-positive expiry."""
    if not NAME.match(name) or name in RESERVED_NAMES:
        raise ValueError(f"a key name is 1-64 of A-Z a-z 0-9 _ . - and not {' or '.join(RESERVED_NAMES)}")
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {', '.join(SCOPES)}")
    if expires_days is not None and expires_days <= 0:
        raise ValueError("--expires must be a positive number of days")
    key_id = secrets.token_hex(KEY_ID_CHARS // 2)
    key = f"{PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
    salt = secrets.token_bytes(16)
    now = datetime.now(timezone.utc)
    expires = to_iso(now + timedelta(days=expires_days)) if expires_days is not None else None
    try:
        with database.transaction(conn, read_by_provider=False):
            conn.execute("INSERT INTO api_keys (name, key_id, salt, hash, scope, created_at, expires_at)"
                         " VALUES (?, ?, ?, ?, ?, ?, ?)", (name, key_id, salt, digest(salt, key), scope,
                                                           to_iso(now), expires))
    except sqlite3.IntegrityError:
        raise ValueError(f"a key named {name} exists already (revoked keys keep their name)") from None
    return key


def listing(conn: sqlite3.Connection) -> list[dict]:
    """Every key's name, scope, created, last used, expiry and revocation, oldest first: never the key or its hash."""
    rows = conn.execute("SELECT name, scope, created_at, last_used_at, expires_at, revoked_at FROM api_keys"
                        " ORDER BY created_at, rowid").fetchall()
    return [dict(row) for row in rows]


def revoke(conn: sqlite3.Connection, name: str) -> bool:
    """Revoke the key named `name` (kept, for the audit and `keys list`); False when no such active key."""
    with database.transaction(conn, read_by_provider=False):
        changed = conn.execute("UPDATE api_keys SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL",
                               (utc_now(), name)).rowcount
    return changed == 1


def record_last_used(conn: sqlite3.Connection, used: dict[str, str]) -> None:
    """Set each key's last use ({name: ISO time}) unless a later one is recorded already."""
    with database.transaction(conn, read_by_provider=False):
        conn.executemany("UPDATE api_keys SET last_used_at = ? WHERE name = ?"
                         " AND (last_used_at IS NULL OR last_used_at < ?)",
                         [(when, name, when) for name, when in used.items()])


class KeyRing:
    """The keys of one database as this process last read them, for checking requests.

    Like dashboard.store.generations.Generations: each thread reads on a connection of its own that never
    writes, and reads the table again only when `PRAGMA data_version` says another connection committed (a
    revocation by `flask keys revoke` in another process shows on the next request of every worker). Uses are noted in
    memory and written by a thread of this process at most every `flush_seconds` (last used), so a GET never
    writes. Errors reading the table are raised (sqlite3.Error): the caller fails closed.
    """

    def __init__(self, path: Path | str, flush_seconds: float = 60.0):
        self.path, self.flush_seconds = str(path), flush_seconds
        self._local = threading.local()
        self._used: dict[str, str] = {}
        self._used_lock = threading.Lock()
        self._flusher_pid: Optional[int] = None

    def _rows(self) -> tuple[dict, int]:
        """({key id: row}, how many rows, revoked and expired ones included)."""
        local = self._local
        conn = getattr(local, "conn", None)
        if conn is None or conn.pid != os.getpid():
            conn = local.conn = database.connect(self.path)
            conn.execute("PRAGMA busy_timeout = 100")
            local.version = None
        try:
            version = conn.execute("PRAGMA data_version").fetchone()[0]  # before the read below
            if version != local.version:
                rows = conn.execute("SELECT name, key_id, salt, hash, scope, expires_at, revoked_at"
                                    " FROM api_keys").fetchall()
                local.rows = {row["key_id"]: tuple(row) for row in rows}
                local.count, local.version = len(rows), version
        except sqlite3.Error:
            conn.close()
            local.conn = None
            raise
        return local.rows, local.count

    def configured(self) -> bool:
        """Whether any key was ever created here (a revoked or expired one counts: revoking the last key
        never opens the API again)."""
        return self._rows()[1] > 0

    def check(self, key: str) -> Optional[Key]:
        """The active key `key` is (its name and scope), else None; constant time in the key's secret."""
        rows, _ = self._rows()
        # The same steps whether the key's form or id is wrong or only its secret: a dummy row stands in.
        well_formed = key_id_of(key) is not None
        found = rows.get(key[len(PREFIX):len(PREFIX) + KEY_ID_CHARS])
        row = found if (found is not None) & well_formed else _DUMMY_ROW
        name, _, salt, expected, scope, expires_at, revoked_at = row
        matches = hmac.compare_digest(digest(salt, key), expected)
        if not matches or row is _DUMMY_ROW:
            return None
        if revoked_at is not None or (expires_at is not None and expires_at <= utc_now()):
            return None
        self.note_use(name)
        return Key(name, scope)

    def note_use(self, name: str) -> None:
        """Remember that `name` was used now; the flusher thread writes it within flush_seconds."""
        with self._used_lock:
            self._used[name] = utc_now()
            if self._flusher_pid != os.getpid():  # first use in this process (a forked worker starts its own)
                self._flusher_pid = os.getpid()
                threading.Thread(target=self._flush_forever, name="api-key-last-used", daemon=True).start()

    def flush(self) -> None:
        """Write the uses noted so far (a failure keeps them for the next round)."""
        with self._used_lock:
            used, self._used = self._used, {}
        if not used:
            return
        try:
            conn = database.connect(self.path, busy_timeout=1.0)
            try:
                record_last_used(conn, used)
            finally:
                conn.close()
        except sqlite3.Error as err:
            log.warning("last use of API keys not recorded (tried again later): %s", err)
            with self._used_lock:
                self._used = {**used, **self._used}

    def _flush_forever(self) -> None:
        while True:
            time.sleep(self.flush_seconds)
            self.flush()
