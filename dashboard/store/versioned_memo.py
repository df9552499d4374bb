"""VersionedMemo: values derived from sources that say when they change, kept until they do."""
from __future__ import annotations

from typing import Callable, Hashable, Optional

from dashboard import caching
class VersionedMemo:
    """`get(key, version, compute)`: compute's value, computed again only once `version` differs from
    the one it was computed at (a None version is never kept). The `max_entries` most recently used keys
    are kept; one caller computes a key at a time. Values are shared between requests: callers copy
    before changing one."""

    def __init__(self, max_entries: int = 256):
        self.max_entries = max_entries
        self._cache = caching.Cache(max_entries)

    def get(self, key: Hashable, version: Optional[Hashable], compute: Callable):
        """The value of `key` at `version`."""
        if version is None:
            return compute()
        return self._cache.get_or_compute(key, compute, lambda: version)
