"""VersionedMemo: values derived from sources that say when they change, kept until they do."""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable, Hashable, Optional


class VersionedMemo:
    """`get(key, version, compute)`: compute's value, computed again only once `version` differs from
    the one it was computed at (a None version is never kept). The newest `max_entries` keys are kept.
    Values are shared between requests: callers copy before changing one."""

    def __init__(self, max_entries: int = 256):
        self.max_entries = max_entries
        self._entries: "OrderedDict[Hashable, tuple]" = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable, version: Optional[Hashable], compute: Callable):
        """The value of `key` at `version`."""
        if version is not None:
            with self._lock:
                hit = self._entries.get(key)
                if hit is not None and hit[0] == version:
                    self._entries.move_to_end(key)
                    return hit[1]
        value = compute()
        if version is not None:
            with self._lock:
                self._entries[key] = (version, value)
                self._entries.move_to_end(key)
                while len(self._entries) > self.max_entries:
                    self._entries.popitem(last=False)
        return value
