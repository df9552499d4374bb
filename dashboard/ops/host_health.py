"""Host health from psutil, primed once and cached briefly so no request blocks (glances pattern)."""
from __future__ import annotations

import time

import psutil

from dashboard import caching
from dashboard.timestamps import utc_now

CACHE_SECONDS = 2.0

_samples = caching.Cache(8, ttl=CACHE_SECONDS)  # by disk path
# cpu_percent(interval=None) compares with the previous call; the first call only primes it.
psutil.cpu_percent(interval=None)


def _connections() -> int | None:
    try:
        return sum(1 for c in psutil.net_connections(kind="inet") if c.status == psutil.CONN_ESTABLISHED)
    except (psutil.AccessDenied, OSError):
        return None


def _disk_percent(path: str) -> float | None:
    try:
        return psutil.disk_usage(path).percent
    except OSError:
        return None


def read_sample(disk_path: str = "/") -> dict:
    """A fresh, non-blocking reading: CPU since the previous call, memory, disk, uptime, connections."""
    uptime = max(0, int(time.time() - psutil.boot_time()))
    return {
        "cpu_percent": psutil.cpu_percent(interval=None),
        "memory_percent": psutil.virtual_memory().percent,
        "disk_percent": _disk_percent(disk_path),
        "uptime_seconds": uptime,
        "uptime_hours": round(uptime / 3600, 2),
        "active_connections": _connections(),
        "timestamp": utc_now(),
    }


def current(disk_path: str = "/") -> dict:
    """The latest reading, at most CACHE_SECONDS old (shared by every caller in this process; one of them
    reads while the others wait for it)."""
    return dict(_samples.get_or_compute(disk_path, lambda: read_sample(disk_path)))
