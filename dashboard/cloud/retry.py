"""The cloud calls' urllib3 retry policies: GETs retried with backoff, POSTs never."""
from __future__ import annotations

from typing import Optional

from urllib3.exceptions import MaxRetryError, ReadTimeoutError, ResponseError
from urllib3.util.retry import Retry

RETRIES = 3                     # retries after the first attempt, GET only
BACKOFF_FACTOR = 0.3            # sleeps 0, 0.6, 1.2 s between the attempts
BACKOFF_MAX = 2.0               # cap of a backoff and of a Retry-After we are willing to wait
RETRY_STATUSES = (429, 502, 503, 504)


class CloudRetry(Retry):
    """urllib3 Retry that never retries a read timeout and does not wait for a Retry-After over backoff_max.

    urllib3's backoff_max caps only the computed backoff; a Retry-After of 60 s would be slept in full. Here a
    Retry-After longer than backoff_max ends the retries at once (the 429/503 answer is then returned).
    """

    def increment(self, method=None, url=None, response=None, error=None, _pool=None, _stacktrace=None):
        if isinstance(error, ReadTimeoutError):
            raise error.with_traceback(_stacktrace)
        if response is not None and self.respect_retry_after_header:
            wait = self._retry_after(response)
            if wait is not None and wait > self.backoff_max:
                raise MaxRetryError(_pool, url, ResponseError(f"Retry-After {wait:.0f}s exceeds {self.backoff_max}s"))
        return super().increment(method=method, url=url, response=response, error=error, _pool=_pool,
                                 _stacktrace=_stacktrace)

    def _retry_after(self, response) -> Optional[float]:
        try:
            return super().get_retry_after(response)
        except Exception:  # an unparsable Retry-After: fall back to the exponential backoff
            return None

    def get_retry_after(self, response) -> Optional[float]:
        seconds = self._retry_after(response)
        return None if seconds is None else min(seconds, self.backoff_max)


def read_retry() -> CloudRetry:
    """The retry policy of GETs."""
    return CloudRetry(total=RETRIES, backoff_factor=BACKOFF_FACTOR, backoff_max=BACKOFF_MAX,
                      status_forcelist=RETRY_STATUSES, allowed_methods=frozenset({"GET"}),
                      respect_retry_after_header=True, raise_on_status=False, raise_on_redirect=False)


def write_retry() -> CloudRetry:
    """The retry policy of POSTs: none at all (a POST may have reached the upstream before failing)."""
    # allowed_methods must not be empty: urllib3 treats an empty set as "every method".
    return CloudRetry(total=0, connect=0, read=False, status=0, redirect=0, allowed_methods=frozenset({"GET"}),
                      respect_retry_after_header=False, raise_on_status=False, raise_on_redirect=False)
