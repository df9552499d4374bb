"""The cloud proxy's circuit breaker: calls fail at once while the upstream keeps failing."""
from __future__ import annotations

import logging
import math
import threading
import time
from typing import Optional

from errors import ApiError

log = logging.getLogger("cloud_client")


class CircuitBreaker:
    """Fails calls at once while the upstream is failing; per process, thread-safe.

    After `failures` calls in a row failed, it is open for `reset_seconds`: admit() raises ApiError 503 with
    Retry-After. Then exactly one caller is admitted as the probe (half-open; the others still get 503 while it
    runs): its success closes the breaker, its failure opens it again. `failures` 0 disables it.
    """

    def __init__(self, failures: int, reset_seconds: float):
        self.failures = int(failures)
        self.reset_seconds = float(reset_seconds)
        self._lock = threading.Lock()
        self._streak = 0                        # failures in a row
        self._opened_at: Optional[float] = None  # monotonic time it opened; None while closed
        self._probing = False

    def admit(self) -> bool:
        """Whether this call is the probe of a half-open breaker; ApiError 503 while the breaker is open."""
        if self.failures <= 0:
            return False
        with self._lock:
            if self._opened_at is None:
                return False
            left = self._opened_at + self.reset_seconds - time.monotonic()
            if left <= 0 and not self._probing:
                self._probing = True
                return True
        wait = max(1, math.ceil(left))
        raise ApiError(503, f"upstream is failing: circuit breaker open, calls to it are refused for {wait}s more "
                            f"(it opens after CLOUD_BREAKER_FAILURES={self.failures} failed calls in a row)",
                       headers={"Retry-After": str(wait)})

    def record(self, answered: bool, probe: bool) -> None:
        """Count a call's outcome: `answered` unless it got no answer or a 5xx/429 (after the retries)."""
        if self.failures <= 0:
            return
        with self._lock:
            if probe:
                self._probing = False
            self._streak = 0 if answered else self._streak + 1
            was_open, streak = self._opened_at is not None, self._streak
            if probe:
                self._opened_at = None if answered else time.monotonic()
            elif not answered and not was_open and streak >= self.failures:
                self._opened_at = time.monotonic()
            now_open = self._opened_at is not None
        if now_open and not was_open:
            log.warning("cloud upstream failing: circuit breaker open after %d failed calls in a row; calls are "
                        "refused for %gs", streak, self.reset_seconds)
        elif probe and now_open:
            log.warning("cloud upstream still failing: the probe call failed; circuit breaker open again for %gs",
                        self.reset_seconds)
        elif probe:
            log.warning("cloud upstream answered the probe call: circuit breaker closed")


def failing_status(status: int) -> bool:
    """Whether an upstream status (after the retries) counts as a failure for the circuit breaker."""
    return status >= 500 or status == 429
