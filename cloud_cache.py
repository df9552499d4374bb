"""The cloud provider's cache of upstream GET results: a TTL, a generation, one load per key at a time."""
from __future__ import annotations

import copy
import threading
import time
from typing import Any, Callable, Optional


class TTLCache:
    """A per-process cache of upstream GET results for `seconds` (0 disables), keyed by path and query.

    Concurrent misses of one key make a single upstream call (the others wait for it). Failures are not
    cached. Values are deep-copied on the way out so no caller can change what another gets. With
    `generation` (key -> a number, or None when unknown), a result is kept only while the generation it was
    loaded at is unchanged: a write through any worker shows at once (database.Generations).
    """

    def __init__(self, seconds: float, max_entries: int = 512,
                 generation: Optional[Callable[[str], Optional[int]]] = None):
        self.seconds = float(seconds)
        self.max_entries = max_entries
        self.generation = generation or (lambda key: None)
        self._entries: dict[str, tuple[float, Optional[int], Any]] = {}
        self._loading: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    def get_or_load(self, key: str, load: Callable[[], Any]) -> Any:
        if self.seconds <= 0:
            return load()
        hit = self._fresh(key)
        if hit is not None:
            return copy.deepcopy(hit[2])
        with self._lock:
            key_lock = self._loading.setdefault(key, threading.Lock())
        with key_lock:
            hit = self._fresh(key)
            if hit is not None:
                return copy.deepcopy(hit[2])
            generation = self.generation(key)  # read before loading: a write from now on outdates the value
            value = load()
            with self._lock:
                self._entries[key] = (time.monotonic() + self.seconds, generation, value)
                if len(self._entries) > self.max_entries:
                    self._prune()
            return copy.deepcopy(value)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def _fresh(self, key: str) -> Optional[tuple[float, Optional[int], Any]]:
        generation = self.generation(key)
        with self._lock:
            hit = self._entries.get(key)
            return hit if hit is not None and hit[0] > time.monotonic() and hit[1] == generation else None

    def _prune(self) -> None:
        now = time.monotonic()
        for key in [k for k, (expires, _, _) in self._entries.items() if expires <= now]:
            del self._entries[key]
            self._loading.pop(key, None)
        while len(self._entries) > self.max_entries:
            oldest = min(self._entries, key=lambda k: self._entries[k][0])
            del self._entries[oldest]
            self._loading.pop(oldest, None)
