"""One webhook request: the body (json or slack), its signature, the POST, and what its answer means.

requests with a Session per sender, explicit timeouts and urllib3's Retry set to never retry or follow a
redirect here: retries are the outbox's (they must outlive a restart), and a redirect is not followed.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import random
from dataclasses import dataclass
from typing import Optional

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from dashboard.config import VERSION

CONNECT_TIMEOUT = 3.05
BACKOFF_FIRST_SECONDS = 1.0
RETRY_STATUSES = frozenset({429})  # and every 5xx; any other 4xx is a refusal for good
ICONS = {"alert.raised": ":rotating_light:", "alert.cleared": ":white_check_mark:", "training.failed": ":x:",
         "training.completed": ":tada:", "test": ":wave:"}


@dataclass(frozen=True)
class Outcome:
    """How an attempt ended: `sent`, `retry` (after `retry_after` s when the target said so) or `failed`."""

    status: str
    error: Optional[str] = None
    retry_after: Optional[float] = None


def body_of(delivery: dict, fmt: str, dashboard: dict, sent_at: str) -> bytes:
    """The request body of a delivery: the json document, or Slack/Mattermost's {"text": ...}."""
    document = {"delivery_id": delivery["delivery_id"], "event": delivery["event"], "alert": delivery["alert"],
                "run": delivery["run"], "dashboard": dashboard, "sent_at": sent_at}
    if fmt == "slack":
        document = {"text": text_of(document)}
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def text_of(document: dict) -> str:
    """One line or two for a chat channel."""
    event, alert, run = document["event"], document["alert"], document["run"]
    icon = ICONS.get(event, "")
    if alert is not None:
        line = f"{icon} [{alert['severity']}] {event.replace('.', ' ')}: {alert['message']} (`{alert['id']}`)"
    elif run is not None:
        line = f"{icon} {event.replace('.', ' ')}: run {run['run_id']} {run['status']}"
        line += f": {run['error']}" if run.get("error") else ""
    else:
        line = f"{icon} test notification from the training dashboard"
    env = document["dashboard"]["environment"]
    url = document["dashboard"]["url"]
    return f"{line}\n{env}" + (f" · {url}" if url else "")


def signature(secret: str, body: bytes) -> str:
    """X-Dashboard-Signature's value: sha256=<hex HMAC-SHA256 of the body under the secret>."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def backoff(attempts: int, cap: float, retry_after: Optional[float] = None) -> float:
    """Seconds before the next attempt: exponential from BACKOFF_FIRST_SECONDS, capped, with full jitter in
    its upper half; at least the target's Retry-After."""
    ceiling = min(cap, BACKOFF_FIRST_SECONDS * 2 ** min(attempts - 1, 40))
    return max(random.uniform(ceiling / 2, ceiling), retry_after or 0.0)


def session() -> requests.Session:
    """A Session that neither retries nor follows redirects (the outbox does the retrying)."""
    s = requests.Session()
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=4,
                          max_retries=Retry(total=0, redirect=0, raise_on_redirect=False, raise_on_status=False))
    s.mount("https://", adapter)
    s.mount("http://", adapter)
    s.auth = _no_auth  # as session.auth, so requests never swaps in .netrc credentials (proxies still apply)
    s.headers.update({"Content-Type": "application/json", "User-Agent": f"training-dashboard/{VERSION} (notifier)"})
    return s


def post(http: requests.Session, url: str, body: bytes, delivery_id: str, secret: str, timeout: float) -> Outcome:
    """POST one delivery and classify the answer: 2xx sent; a connection error, a timeout, 429 and 5xx
    retried; a redirect and any other 4xx failed for good."""
    headers = {"X-Dashboard-Delivery": delivery_id}
    if secret:
        headers["X-Dashboard-Signature"] = signature(secret, body)
    try:
        with http.post(url, data=body, headers=headers, timeout=(min(CONNECT_TIMEOUT, timeout), timeout),
                       allow_redirects=False, stream=True) as response:
            status = response.status_code
            retry_after = _retry_after(response.headers.get("Retry-After"))
    except requests.Timeout:
        return Outcome("retry", f"no answer within {timeout:g} s")
    except requests.RequestException as err:
        return Outcome("retry", f"connection failed: {type(err).__name__}")
    if 200 <= status < 300:
        return Outcome("sent")
    if status in RETRY_STATUSES or status >= 500:
        return Outcome("retry", f"HTTP {status}", retry_after)
    if 300 <= status < 400:
        return Outcome("failed", f"HTTP {status}: a redirect, not followed")
    return Outcome("failed", f"HTTP {status}")


def _no_auth(request):
    return request


def _retry_after(value: Optional[str]) -> Optional[float]:
    if not value:
        return None
    try:
        return max(0.0, Retry().parse_retry_after(value))
    except Exception:  # noqa: BLE001 - urllib3 raises its own error on a malformed value
        return None
