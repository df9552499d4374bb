"""The cloud provider's cache of upstream GET results: a TTL, a generation, one load per key at a time."""
from __future__ import annotations

import copy
from typing import Any, Callable, Optional

from dashboard import caching
class TTLCache:
    """A per-process cache of upstream GET results for `seconds` (0 disables), keyed by path and query.

    Concurrent misses of one key make a single upstream call (the others wait for it). Failures are not
    cached. Values are deep-copied on the way out so no caller can change what another gets. With
    `generation` (key -> a number, or None when unknown), a result is kept only while the generation it was
    loaded at is unchanged: a write through any worker shows at once (store.generations.Generations).
    """

    def __init__(self, seconds: float, max_entries: int = 512,
                 generation: Optional[Callable[[str], Optional[int]]] = None):
        self.seconds = float(seconds)
        self.max_entries = max_entries
        self.generation = generation or (lambda key: None)
        self._cache = caching.Cache(max_entries, ttl=self.seconds)

    def get_or_load(self, key: str, load: Callable[[], Any]) -> Any:
        """load()'s result for key (a copy), loaded again once it expired or its generation changed."""
        if self.seconds <= 0:
            return load()
        return copy.deepcopy(self._cache.get_or_compute(key, load, lambda: self.generation(key)))

    def clear(self) -> None:
        """Forget every result."""
        self._cache.clear()
