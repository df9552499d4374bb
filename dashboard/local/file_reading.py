"""Safe reads of untrusted files: paths kept inside a root, regular files only (never a FIFO that
blocks), whole-file reads capped in size, and the timestamps the orchestrator writes. Standard
library only.
"""
from __future__ import annotations

import functools
import os
import re
import stat
from datetime import datetime, timedelta, timezone, tzinfo
from pathlib import Path
from typing import Optional

from dashboard.timestamps import to_iso

MAX_FILE_BYTES = 10 * 1024 * 1024
BLOCK_SIZE = 64 * 1024
TIMESTAMP_RE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?)?$")


def resolve_inside(root, relpath) -> Optional[Path]:
    """The real path of root/relpath with symlinks resolved, or None if it leaves the real root."""
    try:
        real_root = os.path.realpath(root)
        real = os.path.realpath(os.path.join(real_root, relpath))
        return Path(real) if os.path.commonpath([real_root, real]) == real_root else None
    except (OSError, ValueError, TypeError):
        return None


# Years a timestamp may have: outside them, time zone shifts and run durations would leave datetime's range
# (1-9999) and strftime would write a year of fewer than four digits.
TIMESTAMP_YEARS = (1000, 9998)


def parse_naive_timestamp(s) -> Optional[datetime]:
    """A naive datetime from ISO (optional fraction) or log format "2025-11-14 03:00:01,532", else None."""
    m = TIMESTAMP_RE.match(s.strip()) if isinstance(s, str) else None
    if not m:
        return None
    year, month, day, hour, minute, second, fraction = m.groups()
    micro = int((fraction or "0")[:6].ljust(6, "0"))
    if not TIMESTAMP_YEARS[0] <= int(year) <= TIMESTAMP_YEARS[1]:
        return None
    try:
        return datetime(int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0), micro)
    except ValueError:
        return None


def to_utc_iso(dt, tz: tzinfo) -> Optional[str]:
    """`YYYY-MM-DDTHH:MM:SSZ` for dt (naive means local time in tz), or None."""
    if not isinstance(dt, datetime):
        return None
    try:
        if dt.tzinfo is None:
            offset = _hour_offset(tz, dt.year, dt.month, dt.day, dt.hour)
            utc = dt - (offset if offset is not None else _localize(dt, tz).utcoffset())
        else:
            utc = dt.astimezone(timezone.utc).replace(tzinfo=None)
        return to_iso(utc)
    except (OverflowError, ValueError):
        return None


def _localize(dt: datetime, tz: tzinfo) -> datetime:
    return tz.localize(dt) if hasattr(tz, "localize") else dt.replace(tzinfo=tz)  # pytz needs localize


@functools.lru_cache(maxsize=1 << 16)
def _hour_offset(tz: tzinfo, year: int, month: int, day: int, hour: int) -> Optional[timedelta]:
    """The zone's UTC offset through a local hour, or None when it changes within it (then each time is
    converted on its own): one zone lookup per hour of timestamps, not one per timestamp."""
    start = datetime(year, month, day, hour)
    first = _localize(start, tz).utcoffset()
    return first if _localize(start.replace(minute=59, second=59, microsecond=999999), tz).utcoffset() == first else None


def file_identity(path: Path) -> Optional[tuple]:
    """(device, inode, mtime_ns, size) of a regular file, or None: what changes when the file does."""
    try:
        st = os.stat(path)
        # The inode names the file wherever the path points (cheaper than realpath on every call).
        return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size) if stat.S_ISREG(st.st_mode) else None
    except (OSError, ValueError):
        return None


def open_regular(path: Path):
    """(fd, stat, warnings): an open descriptor of a regular file, or (None, None, [why not])."""
    name = path.name
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None, None, [f"{name}: not a regular file, refused"]
        # O_NONBLOCK: if the file was swapped for a FIFO after the stat, open still cannot hang.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    except (FileNotFoundError, NotADirectoryError):
        return None, None, [f"{name}: missing"]
    except (OSError, ValueError) as exc:
        return None, None, [f"{name}: cannot open ({getattr(exc, 'strerror', None) or exc})"]
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        return None, None, [f"{name}: not a regular file, refused"]
    return fd, st, []


def read_capped(path: Path, cap: int = MAX_FILE_BYTES):
    """(bytes|None, warnings): the whole file if it is regular and at most `cap` bytes."""
    fd, st, warnings = open_regular(path)
    if fd is None:
        return None, warnings
    too_large = [f"{path.name}: too large ({st.st_size} bytes, limit {cap})"]
    try:
        if st.st_size > cap:
            return None, too_large
        chunks, total = [], 0
        while total <= cap:
            chunk = os.read(fd, min(1 << 20, cap + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        return (None, too_large) if total > cap else (b"".join(chunks), [])
    except OSError as exc:
        return None, [f"{path.name}: cannot read ({exc.strerror})"]
    finally:
        os.close(fd)


def decode_text(data: bytes) -> str:
    """A file's bytes as text: UTF-8, undecodable bytes replaced, without a byte-order mark."""
    return data.decode("utf-8", errors="replace").removeprefix("\ufeff")
