"""ParseCache: what the orchestrator's files parsed to, kept for the app that owns it; and `cached`, the
wrapper that makes a parser total and, given a ParseCache, answers from it.

A parse is kept under its file's identity (device, inode, mtime, size): an unchanged file is not read
again. A JSON file torn by a rewrite is answered from its last good parse, marked stale.
"""
from __future__ import annotations

import functools
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Optional

from file_reading import file_identity

ENTRIES = 1024
SMALL_ENTRIES = 16  # log tails and folder listings: few of them, each large


class TornJSON(str):
    """A warning that a JSON file could not be read whole (empty or unparsable: perhaps torn by a rewrite)."""


class _Bounded:
    """At most `bound` entries, the least recently used dropped first."""

    def __init__(self, bound: int, lock: threading.Lock):
        self.bound = bound
        self._lock = lock
        self._entries: OrderedDict = OrderedDict()

    def get(self, key):
        """The value kept under key, or None."""
        with self._lock:
            value = self._entries.get(key)
            if value is not None:
                self._entries.move_to_end(key)
            return value

    def put(self, key, value) -> None:
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self.bound:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


class ParseCache:
    """Parses by file identity, log tails, daily-report folder listings, and each parser's last good parse
    per real path; each bounded by its entry count, all under one lock."""

    def __init__(self, entries: int = ENTRIES, tails: int = SMALL_ENTRIES, listings: int = SMALL_ENTRIES):
        lock = threading.Lock()
        self.parsed = _Bounded(entries, lock)
        self.last_good = _Bounded(entries, lock)
        self.tails = _Bounded(tails, lock)
        self.listings = _Bounded(listings, lock)

    def of_file(self, store: _Bounded, kind: str, path: Path, read: Callable[[], tuple]) -> tuple:
        """read()'s (value, warnings) for the file at path, kept in store while the file is unchanged."""
        identity = file_identity(path)
        key = None if identity is None else (kind, *identity)
        hit = store.get(key) if key else None
        if hit is not None:
            return hit[0], list(hit[1])
        value, warnings = read()
        if key is not None and file_identity(path) == identity:  # not rewritten while it was read
            store.put(key, (value, tuple(warnings)))
        return value, warnings

    def or_last_good(self, kind: str, path: Path, value, warnings: list, torn: bool) -> tuple:
        """(value, warnings), remembered as the last good parse of path; for a torn JSON file, the last good
        parse instead (if any), led by the torn file's warning marked stale."""
        key = (kind, os.path.realpath(path))
        if not torn:
            if value is not None:
                self.last_good.put(key, (value, tuple(warnings)))
            return value, warnings
        good = self.last_good.get(key)
        if good is None:
            return value, warnings
        return good[0], [f"{w}, serving last good copy (stale)" for w in warnings] + list(good[1])


def _parse(parser, path: Path) -> tuple:
    """(value, warnings, torn) of parser(path), never an exception; torn if its JSON file was not whole."""
    try:
        value, warnings = parser(path)
    except Exception as exc:  # totality is the contract; name the bug rather than fail the request
        return None, [f"{path.name}: internal error while parsing ({type(exc).__name__})"], False
    torn = any(isinstance(w, TornJSON) for w in warnings)
    return value, [str(w) for w in dict.fromkeys(warnings)], torn


def cached(parser):
    """parser(path) made total, with an optional `cache`: given a ParseCache, an unchanged file is answered
    from it and a torn JSON file from its last good parse; without one, every call parses."""
    @functools.wraps(parser)
    def wrapper(path, *, cache: Optional[ParseCache] = None):
        path = Path(path)
        if cache is None:
            return _parse(parser, path)[:2]
        kind = parser.__name__
        return cache.of_file(cache.parsed, kind, path, lambda: cache.or_last_good(kind, path, *_parse(parser, path)))
    return wrapper
