"""The cloud proxy's circuit breaker: calls fail at once while the upstream keeps failing, in every worker of
the instance (its state is a small file they share under flock)."""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import threading
import time
from typing import Callable, Optional, TypeVar

from dashboard.cloud.retry import BACKOFF_MAX, RETRIES
from dashboard.web.errors import ApiError
from dashboard.ops.file_lock import flock_within

log = logging.getLogger("dashboard.cloud.client")  # one logger for the cloud calls

T = TypeVar("T")
STATE_BYTES = 128           # the state file's fixed size: written in place, never truncated
LOCK_WAIT_SECONDS = 0.5     # how long a call waits for another process's (microseconds long) turn at the file


@dataclasses.dataclass
class BreakerState:
    """What the breaker knows: the failures in a row, since when it is open, since when a probe runs.

    Times are wall-clock (time.time()): the monotonic clock is not comparable across processes."""

    streak: int = 0
    opened_at: Optional[float] = None   # None while closed
    probe_at: Optional[float] = None    # when a caller took the half-open probe; None when nobody has it

    def encode(self) -> bytes:
        data = json.dumps(dataclasses.asdict(self)).encode()
        if len(data) > STATE_BYTES:
            raise ValueError("breaker state too long for its file")
        return data.ljust(STATE_BYTES)

    @classmethod
    def decode(cls, data: bytes) -> "BreakerState":
        """The state written by encode(); ValueError for anything else (an empty file is a closed breaker)."""
        if not data.strip():
            return cls()
        fields = json.loads(data)
        streak, opened_at, probe_at = int(fields["streak"]), fields["opened_at"], fields["probe_at"]
        return cls(streak, None if opened_at is None else float(opened_at),
                   None if probe_at is None else float(probe_at))


class SharedState:
    """A BreakerState shared by every process that uses the same file, changed atomically.

    With no path, or while the file cannot be used (its folder missing or read-only, the disk full, its lock
    held for over LOCK_WAIT_SECONDS), the state is this process's own, continued from what was last read;
    a warning says when that starts and when the file works again.
    """

    def __init__(self, path: Optional[str]):
        self.path = path
        self._lock = threading.Lock()
        self._state = BreakerState()   # this process's copy: the file's as last read, or the fallback
        self._shared = True

    def update(self, change: Callable[[BreakerState], T]) -> T:
        """Apply `change` to the current state, with no other thread or process in between; its result."""
        with self._lock:
            if self.path is None:
                return change(self._state)
            try:
                result, self._state = self._update_file(change)
            except (OSError, ValueError) as err:
                if self._shared:
                    log.warning("circuit breaker state file %s unusable (%s); this worker counts on its own "
                                "until it works again", self.path, type(err).__name__)
                    self._shared = False
                return change(self._state)
            if not self._shared:
                log.warning("circuit breaker state file %s works again: shared by the workers", self.path)
                self._shared = True
            return result

    def _update_file(self, change: Callable[[BreakerState], T]) -> tuple[T, BreakerState]:
        # A descriptor of its own per update: flock excludes other descriptors, those of this process too.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            _lock(fd)
            data = os.pread(fd, STATE_BYTES, 0)
            try:
                state, rewrite = BreakerState.decode(data), False
            except (ValueError, KeyError, TypeError):
                log.warning("circuit breaker state file %s held no valid state: starting closed", self.path)
                state, rewrite = BreakerState(), True
            before = dataclasses.replace(state)
            result = change(state)
            if rewrite or state != before:
                if os.pwrite(fd, state.encode(), 0) != STATE_BYTES:
                    raise OSError("short write")
            return result, state
        finally:
            os.close(fd)  # releases the lock


def _lock(fd: int) -> None:
    if not flock_within(fd, LOCK_WAIT_SECONDS, poll=0.001):
        raise TimeoutError("circuit breaker state file locked for too long")


class CircuitBreaker:
    """Fails calls at once while the upstream is failing; thread-safe, and shared by the processes whose
    breakers have the same `state_path` (per process without one).

    After `failures` calls in a row failed, it is open for `reset_seconds`: admit() raises ApiError 503 with
    Retry-After. Then exactly one caller is admitted as the probe (half-open; the others still get 503 while it
    runs): its success closes the breaker, its failure opens it again. A probe that has not reported within
    `probe_seconds` (its worker died) gives the place to the next caller. `failures` 0 disables it.
    """

    def __init__(self, failures: int, reset_seconds: float, state_path: Optional[str] = None,
                 probe_seconds: float = 60.0):
        self.failures = int(failures)
        self.reset_seconds = float(reset_seconds)
        self.probe_seconds = float(probe_seconds)
        self._state = SharedState(state_path)

    @classmethod
    def from_config(cls, config: dict) -> "CircuitBreaker":
        """The breaker of ENVIRONMENT=cloud: CLOUD_BREAKER_*, shared through <DATABASE_PATH>.breaker."""
        attempt = config.get("CLOUD_CONNECT_TIMEOUT_SECONDS", 3.05) + config.get("CLOUD_TIMEOUT_SECONDS", 10)
        longest_call = (RETRIES + 1) * attempt + RETRIES * BACKOFF_MAX  # a streamed GET's tries and backoffs
        database_path = config.get("DATABASE_PATH")
        return cls(config.get("CLOUD_BREAKER_FAILURES", 5), config.get("CLOUD_BREAKER_RESET_SECONDS", 30),
                   f"{database_path}.breaker" if database_path else None, longest_call + 1)

    def admit(self) -> bool:
        """Whether this call is the probe of a half-open breaker; ApiError 503 while the breaker is open."""
        if self.failures <= 0:
            return False
        refused_for, probe, stale = self._state.update(self._admit)
        if stale:
            log.warning("cloud upstream: the previous probe call never reported (its worker gone?); "
                        "this call is the probe")
        if refused_for is None:
            return probe
        self._refuse(refused_for)

    def refuse_while_open(self) -> None:
        """ApiError 503 (as admit()'s) while the breaker is open or its probe is under way; nothing changes."""
        if self.failures > 0:
            refused_for = self._state.update(lambda state: self._admit(dataclasses.replace(state))[0])
            if refused_for is not None:
                self._refuse(refused_for)

    def _refuse(self, refused_for: float) -> None:
        wait = max(1, math.ceil(refused_for))
        raise ApiError(503, f"upstream is failing: circuit breaker open, calls to it are refused for {wait}s more "
                            f"(it opens after CLOUD_BREAKER_FAILURES={self.failures} failed calls in a row)",
                       headers={"Retry-After": str(wait)})

    def _admit(self, state: BreakerState) -> tuple[Optional[float], bool, bool]:
        """(seconds refused for, or None when admitted; whether as the probe; whether a stale probe's place)."""
        if state.opened_at is None:
            return None, False, False
        now = time.time()
        left = min(state.opened_at + self.reset_seconds - now, self.reset_seconds)  # the clock may be set back
        probing = state.probe_at is not None and abs(now - state.probe_at) < self.probe_seconds
        if left > 0 or probing:
            return left, False, False
        stale, state.probe_at = state.probe_at is not None, now
        return None, True, stale

    def record(self, answered: bool, probe: bool) -> None:
        """Count a call's outcome: `answered` unless it got no answer or a 5xx/429 (after the retries)."""
        if self.failures <= 0:
            return
        was_open, now_open, streak = self._state.update(lambda state: self._record(state, answered, probe))
        if now_open and not was_open:
            log.warning("cloud upstream failing: circuit breaker open after %d failed calls in a row; calls are "
                        "refused for %gs", streak, self.reset_seconds)
        elif probe and now_open:
            log.warning("cloud upstream still failing: the probe call failed; circuit breaker open again for %gs",
                        self.reset_seconds)
        elif probe:
            log.warning("cloud upstream answered the probe call: circuit breaker closed")

    def _record(self, state: BreakerState, answered: bool, probe: bool) -> tuple[bool, bool, int]:
        was_open = state.opened_at is not None
        state.streak = 0 if answered else state.streak + 1
        if probe:
            state.probe_at = None
            state.opened_at = None if answered else time.time()
        elif not answered and not was_open and state.streak >= self.failures:
            state.opened_at = time.time()
        return was_open, state.opened_at is not None, state.streak


def failing_status(status: int) -> bool:
    """Whether an upstream status (after the retries) counts as a failure for the circuit breaker."""
    return status >= 500 or status == 429
