"""ParseCache: what the orchestrator's files parsed to, kept for the app that owns it; and `cached`, the
wrapper that makes a parser total and, given a ParseCache, answers from it.

One version per file: a parse is kept under its kind and path with the file's identity (device, inode,
mtime, size) it was read at, so an unchanged file is not read again and a rewritten one replaces its
old parse. A JSON file torn by a rewrite is answered from its last good parse, marked stale.

Memory is bounded by bytes (PARSE_CACHE_MAX_BYTES), the least recently used dropped first. An entry
is charged the bytes its source had when read (the file's size, or the tail window read of a log) plus
ENTRY_BYTES: a parsed object takes a few times its source in memory, so the budget is an estimate of
the sources kept, not a measure of the heap. One thread parses a file at a time; the others wait for its
parse (caching.Cache).
"""
from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Callable, NamedTuple, Optional

from dashboard import caching
from dashboard.local.file_reading import MAX_FILE_BYTES, file_identity

MAX_BYTES = 64 << 20
ENTRY_BYTES = 512  # charged for every entry besides its source: keys, tuples, warnings


class TornJSON(str):
    """A warning that a JSON file could not be read whole (empty or unparsable: perhaps torn by a rewrite)."""


class _Parse(NamedTuple):
    value: object
    warnings: tuple
    good: Optional[tuple]  # (value, warnings, source bytes) of the last whole parse, for a torn rewrite
    cost: int
    whole: bool  # read while the file was as its identity says (not rewritten meanwhile): may be kept


def _whole(parse: _Parse) -> bool:
    return parse.whole


class ParseCache:
    """Parses, log tails and folder listings, one version per (kind, path), within `max_bytes` in all
    (caching.Cache, keyed by (kind, path), with the file's identity as its token)."""

    def __init__(self, max_bytes: int = MAX_BYTES):
        self.max_bytes = max_bytes
        self._cache = caching.Cache(max_bytes, sizeof=lambda parse: parse.cost)

    def __len__(self) -> int:
        return len(self._cache)

    @property
    def bytes(self) -> int:
        """What the kept entries are charged."""
        return self._cache.size

    def get(self, key: tuple, identity: Optional[tuple]):
        """The value kept under key if it was read at `identity`, else None."""
        parse = self._cache.get(key, identity) if identity is not None else None
        return None if parse is None else parse.value

    def put(self, key: tuple, identity: Optional[tuple], value, source_bytes: int) -> None:
        """Keep value under key as read at `identity` (replacing any other version)."""
        self._cache.put(key, _Parse(value, (), None, ENTRY_BYTES + source_bytes, True), identity)

    def of_file(self, kind: str, path: Path, read: Callable[[], tuple], max_bytes: int = MAX_FILE_BYTES) -> tuple:
        """read()'s (value, warnings) for the file at path, kept while the file is unchanged; it is charged
        the file's size up to `max_bytes` (what read() reads of it at most)."""
        identity = file_identity(path)

        def compute() -> _Parse:
            value, warnings = read()
            source = min(identity[3], max_bytes) if identity is not None and value is not None else 0
            return _Parse(value, tuple(warnings), None, ENTRY_BYTES + source, self._unchanged(path, identity))

        parse = self._cache.get_or_compute((kind, os.fspath(path)), compute, lambda: identity, keep=_whole)
        return parse.value, list(parse.warnings)

    def parsed_file(self, kind: str, path: Path, parse: Callable[[], tuple]) -> tuple:
        """(value, warnings) of parse() (which returns (value, warnings, torn)) for the file at path, kept
        while the file is unchanged; for a torn JSON file, its last good parse (if any), led by the torn
        file's warning marked stale."""
        identity = file_identity(path)
        key = (kind, os.fspath(path))

        def compute() -> _Parse:
            value, warnings, torn = parse()
            before = self._cache.entry(key)  # any version: its last good parse
            good = before.value.good if before is not None else None
            if not torn and value is not None:
                good = (value, tuple(warnings), min(identity[3], MAX_FILE_BYTES) if identity else 0)
            elif torn and good is not None:
                value, warnings = good[0], [f"{w}, serving last good copy (stale)" for w in warnings] + list(good[1])
            cost = ENTRY_BYTES + (good[2] if good is not None else 0)
            return _Parse(value, tuple(warnings), good, cost, self._unchanged(path, identity))

        result = self._cache.get_or_compute(key, compute, lambda: identity, keep=_whole)
        if identity is None:  # gone: nothing to keep for it
            self._cache.discard(key)
        return result.value, list(result.warnings)

    @staticmethod
    def _unchanged(path: Path, identity: Optional[tuple]) -> bool:
        return identity is not None and file_identity(path) == identity


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

