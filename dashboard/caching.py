"""Cache: the one bounded, single-flight cache under every cache of the app (API answers, upstream results,
parsed files, database reads, host samples, schedule descriptions).

Values are kept by key within a budget: a number of entries, or bytes as `sizeof(value)` counts them; the
least recently used go first. Each value may live `ttl` seconds, and each is kept with a token (a file's
identity, a database version, a cache generation): it is served only while the caller's token is the same.
One computation per key runs at a time: the other callers of that key wait for it and take its value, or,
with `stale`, take at once the value that has only expired. A value asked for often can be computed again
in the background shortly before it expires (refresh_in_background), so no caller waits for it.

Storage, the budget and expiry are cachetools' TLRUCache (a size-aware LRU with a drop time per item; small,
pure Python, maintained since 2014). What cachetools leaves to its users is here: one lock around the store,
held for dictionary work only and never while computing (a computation reads files, SQLite or the network,
which give up the GIL: a lock held across them queues every thread), and a lock per key for its computation.
"""
from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from typing import Any, Callable, Hashable, Iterator, NamedTuple, Optional

import cachetools


class Entry(NamedTuple):
    value: Any
    token: Hashable  # what the value was computed at (None when the cache is used without tokens)
    expires: float  # on the cache's timer; math.inf without a ttl


class _Flight:
    """The callers of one key inside computing(): its lock, and how many hold or wait for it."""

    __slots__ = ("lock", "callers")

    def __init__(self):
        self.lock = threading.Lock()
        self.callers = 0


class Cache:
    """Values by key within `maxsize` entries, or `maxsize` bytes counted by `sizeof(value)`; each for `ttl`
    seconds (on `timer`) if given. Values are shared: callers copy before changing one."""

    def __init__(self, maxsize: int, *, sizeof: Optional[Callable[[Any], int]] = None,
                 ttl: Optional[float] = None, timer: Callable[[], float] = time.monotonic):
        self.maxsize = maxsize
        self.ttl = ttl
        self._timer = timer
        self._store = cachetools.TLRUCache(maxsize, self._drop_time, timer,
                                           None if sizeof is None else lambda entry: sizeof(entry.value))
        self._guard = threading.Lock()  # the store and the flights; never held while computing
        self._flights: dict[Hashable, _Flight] = {}

    def __len__(self) -> int:
        with self._guard:
            return len(self._store)

    @property
    def size(self) -> int:
        """What the kept values count against maxsize (entries, or bytes with `sizeof`)."""
        with self._guard:
            return self._store.currsize

    def entry(self, key: Hashable) -> Optional[Entry]:
        """What is kept under key, fresh or not: one that has expired stays while its key is being computed."""
        with self._guard:
            return self._store.get(key)

    def get(self, key: Hashable, token: Hashable = None, default: Any = None) -> Any:
        """The value kept under key if it was computed at `token` and has not expired, else `default`."""
        entry = self.entry(key)
        return entry.value if self._current(entry, token) else default

    def put(self, key: Hashable, value: Any, token: Hashable = None) -> Entry:
        """Keep value under key as computed at `token`, in place of what key held. A value larger than the
        whole budget is not kept (and key then holds nothing)."""
        entry = Entry(value, token, math.inf if self.ttl is None else self._timer() + self.ttl)
        with self._guard:
            try:
                self._store[key] = entry
            except ValueError:  # larger than maxsize
                self._store.pop(key, None)
        return entry

    def discard(self, key: Hashable) -> None:
        """Forget what key holds."""
        with self._guard:
            self._store.pop(key, None)

    def clear(self, which: Optional[Callable[[Hashable], bool]] = None) -> None:
        """Forget every value, or those whose key `which` accepts."""
        with self._guard:
            if which is None:
                self._store.clear()
                return
            self._store.expire()  # the expired ones first: none may come back as a stale value
            for key in [k for k in self._store if which(k)]:
                self._store.pop(key, None)

    def get_or_compute(self, key: Hashable, compute: Callable[[], Any], token: Callable[[], Hashable] = lambda: None,
                       *, stale: bool = False, keep: Callable[[Any], bool] = lambda value: True) -> Any:
        """The value of key at token(): the one kept, or compute()'s, kept if keep(value).

        One caller computes a key at a time; the others wait and take its value, or with `stale`, take a
        kept value that has only expired (same token) at once. token() is read again right before computing:
        a change from then on outdates the value. An exception from compute() is raised and nothing kept."""
        current = token()
        entry = self.entry(key)
        if self._current(entry, current):
            return entry.value
        only_expired = stale and entry is not None and entry.token == current
        with self.computing(key, blocking=not only_expired) as mine:
            if not mine:
                return entry.value
            current = token()
            entry = self.entry(key)
            if self._current(entry, current):
                return entry.value  # computed while this caller waited
            value = compute()
            if keep(value):
                self.put(key, value, current)
            return value

    def expires_within(self, key: Hashable, seconds: float) -> bool:
        """Whether a value is kept under key that has not expired but will within `seconds`."""
        entry = self.entry(key)
        now = self._timer()
        return entry is not None and now < entry.expires <= now + seconds

    def refresh_in_background(self, key: Hashable, compute: Callable[[], Any], token: Callable[[], Hashable],
                              submit: Callable[[Callable[[], None]], Any], *,
                              keep: Callable[[Any], bool] = lambda value: True) -> bool:
        """Have `submit` (an executor's) compute key's value again and keep it, unless key is being computed
        already; the kept value is served meanwhile. Whether a computation was submitted."""
        lock = self.claim(key)
        if not lock.acquire(blocking=False):
            self.release(key)
            return False

        def recompute() -> None:
            try:
                current = token()
                value = compute()
                if keep(value):
                    self.put(key, value, current)
            except Exception:  # noqa: BLE001 - the value kept stays until it expires; a caller computes then
                logging.getLogger(__name__).exception("background refresh of %r failed", key)
            finally:
                self.release(key, lock)
        try:
            submit(recompute)
        except RuntimeError:  # the executor is shutting down
            self.release(key, lock)
            return False
        return True

    @contextlib.contextmanager
    def computing(self, key: Hashable, blocking: bool = True) -> Iterator[bool]:
        """Hold key's computation lock (yields True), or when not `blocking` and another caller holds it,
        yield False at once. While callers are inside, key's value is kept though it expires."""
        lock = self.claim(key)
        held = lock.acquire(blocking)
        try:
            yield held
        finally:
            self.release(key, lock if held else None)

    def claim(self, key: Hashable) -> threading.Lock:
        """key's computation lock, not acquired; until release(key), key's value is kept though it expires."""
        with self._guard:
            flight = self._flights.get(key)
            if flight is None:
                flight = self._flights[key] = _Flight()
                entry = self._store.get(key)
                if entry is None:  # expired but not dropped yet: the others may serve it meanwhile
                    entry = dict(self._store.expire()).get(key)
                if entry is not None:
                    self._store[key] = entry  # stored again: its drop time is now "never" (_drop_time)
            flight.callers += 1
            return flight.lock

    def release(self, key: Hashable, lock: Optional[threading.Lock] = None) -> None:
        """End a claim(key), releasing `lock` too when given (the caller holds it)."""
        with self._guard:
            if lock is not None:
                lock.release()
            flight = self._flights[key]
            flight.callers -= 1
            if flight.callers == 0:
                del self._flights[key]
                entry = self._store.get(key)
                if entry is not None:
                    self._store[key] = entry  # its own drop time again: dropped now if it has expired

    def _drop_time(self, key: Hashable, entry: Entry, now: float) -> float:
        return math.inf if key in self._flights else entry.expires

    def _current(self, entry: Optional[Entry], token: Hashable) -> bool:
        return entry is not None and entry.token == token and entry.expires > self._timer()
