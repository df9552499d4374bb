"""glibc malloc settings for the server's workers, so that memory freed after parsing a large file goes back
to the system instead of staying with the thread that parsed it.

glibc's defaults raise the mmap threshold each time a large block is freed (up to 32 MiB), so the next
file's buffers come from the heap, and give each thread an arena of its own (8 per core): with 8 threads
parsing a rewritten 3 MB file by turns, every arena keeps the high-water mark of one parse. A fixed
threshold and two arenas keep a worker near one parse's worth (bench/rewrite_memory.py,
docs/performance.md). Elsewhere than glibc this does nothing.
"""
from __future__ import annotations

import ctypes
import ctypes.util

M_MMAP_THRESHOLD = -3  # glibc <malloc.h>
M_ARENA_MAX = -8
MMAP_THRESHOLD_BYTES = 256 << 10
ARENAS = 2


def keep_heap_small() -> bool:
    """Set glibc's mmap threshold and arena count for this process (and those it forks); False if not glibc."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(mallopt(M_ARENA_MAX, ARENAS))
