"""ParseCache: what the orchestrator's files parsed to, kept for the app that owns it; and `cached`, the
wrapper that makes a parser total and, given a ParseCache, answers from it.

One version per file: a parse is kept under its kind and path with the file's identity (device, inode,
mtime, size) it was read at, so an unchanged file is not read again and a rewritten one replaces its
old parse. A JSON file torn by a rewrite is answered from its last good parse, marked stale.

Memory is bounded by bytes (PARSE_CACHE_MAX_BYTES), the least recently used dropped first. An entry
is charged the bytes its source had when read (the file's size, or the tail window read of a log) plus
ENTRY_BYTES: a parsed object takes a few times its source in memory, so the budget is an estimate of
the sources kept, not a measure of the heap.
"""
from __future__ import annotations

import functools
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Callable, NamedTuple, Optional

from file_reading import MAX_FILE_BYTES, file_identity

MAX_BYTES = 64 << 20
ENTRY_BYTES = 512  # charged for every entry besides its source: keys, tuples, warnings


class TornJSON(str):
    """A warning that a JSON file could not be read whole (empty or unparsable: perhaps torn by a rewrite)."""


class _Entry(NamedTuple):
    identity: Optional[tuple]  # the file as it was read; None: kept only for its last good parse
    answer: tuple  # (value, warnings)
    good: Optional[tuple]  # (value, warnings, source bytes) of the last whole parse, for a torn rewrite
    cost: int


class ParseCache:
    """Parses, log tails and folder listings, one version per (kind, path), within `max_bytes` in all."""

    def __init__(self, max_bytes: int = MAX_BYTES):
        self.max_bytes = max_bytes
        self.bytes = 0  # what the kept entries are charged
        self._entries: "OrderedDict[tuple, _Entry]" = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def get(self, key: tuple, identity: Optional[tuple]):
        """The value kept under key if it was read at `identity`, else None."""
        entry = self._entry(key)
        return entry.answer[0] if entry is not None and identity is not None and entry.identity == identity else None

    def put(self, key: tuple, identity: Optional[tuple], value, source_bytes: int) -> None:
        """Keep value under key as read at `identity` (replacing any other version)."""
        self._put(key, _Entry(identity, (value, ()), None, ENTRY_BYTES + source_bytes))

    def of_file(self, kind: str, path: Path, read: Callable[[], tuple], max_bytes: int = MAX_FILE_BYTES) -> tuple:
        """read()'s (value, warnings) for the file at path, kept while the file is unchanged; it is charged
        the file's size up to `max_bytes` (what read() reads of it at most)."""
        identity = file_identity(path)
        key = (kind, os.fspath(path))
        entry = self._entry(key)
        if entry is not None and identity is not None and entry.identity == identity:
            return entry.answer[0], list(entry.answer[1])
        value, warnings = read()
        if identity is not None and file_identity(path) == identity:  # not rewritten while it was read
            source = min(identity[3], max_bytes) if value is not None else 0
            self._put(key, _Entry(identity, (value, tuple(warnings)), None, ENTRY_BYTES + source))
        return value, warnings

    def parsed_file(self, kind: str, path: Path, parse: Callable[[], tuple]) -> tuple:
        """(value, warnings) of parse() (which returns (value, warnings, torn)) for the file at path, kept
        while the file is unchanged; for a torn JSON file, its last good parse (if any), led by the torn
        file's warning marked stale."""
        identity = file_identity(path)
        key = (kind, os.fspath(path))
        entry = self._entry(key)
        if entry is not None and identity is not None and entry.identity == identity:
            return entry.answer[0], list(entry.answer[1])
        value, warnings, torn = parse()
        good = entry.good if entry is not None else None
        if not torn and value is not None:
            good = (value, tuple(warnings), min(identity[3], MAX_FILE_BYTES) if identity else 0)
        elif torn and good is not None:
            value, warnings = good[0], [f"{w}, serving last good copy (stale)" for w in warnings] + list(good[1])
        if identity is None:  # gone: nothing to keep for it
            self._drop(key)
        else:
            unchanged = file_identity(path) == identity  # not rewritten while it was read
            cost = ENTRY_BYTES + (good[2] if good is not None else 0)
            self._put(key, _Entry(identity if unchanged else None, (value, tuple(warnings)), good, cost))
        return value, warnings

    def _entry(self, key: tuple) -> Optional[_Entry]:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            return entry

    def _put(self, key: tuple, entry: _Entry) -> None:
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self.bytes -= old.cost
            if entry.cost > self.max_bytes:
                return  # larger than the whole budget: not kept
            self._entries[key] = entry
            self.bytes += entry.cost
            while self.bytes > self.max_bytes:
                _key, gone = self._entries.popitem(last=False)
                self.bytes -= gone.cost

    def _drop(self, key: tuple) -> None:
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self.bytes -= old.cost


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
        return cache.parsed_file(parser.__name__, path, lambda: _parse(parser, path))
    return wrapper

