"""flock_within: an exclusive flock across processes, waited for at most so long."""
from __future__ import annotations

import fcntl
import time


def flock_within(fd, seconds: float, poll: float = 0.005) -> bool:
    """Take an exclusive flock on `fd` (a descriptor or an open file), waiting at most `seconds`
    (0: only if free now); False when another holder kept it that long."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(poll)
