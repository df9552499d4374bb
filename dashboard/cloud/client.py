"""The HTTP layer of the cloud provider: pooled, retrying sessions per thread; upstream failures as ApiError.

Rules (docs/cloud.md):
- one `requests.Session` per thread and per kind (reads, writes): sessions are not documented thread-safe
  and gunicorn runs gthread workers;
- GETs are retried on connection errors and on 429/502/503/504 (3 times, exponential backoff, Retry-After
  honoured up to BACKOFF_MAX seconds; a longer Retry-After is not waited for). A read timeout is not retried:
  a slow upstream stays slow, and one wait of CLOUD_TIMEOUT_SECONDS is the most a request should cost;
- POSTs are never retried;
- redirects are never followed (a redirect is a 502): the key must not travel to another host;
- the key is sent only as `Authorization: Bearer <key>` and never appears in a log line or an error message;
- a circuit breaker shared by the instance's workers (CircuitBreaker) fails every call at once (503, Retry-After)
  for a while after CLOUD_BREAKER_FAILURES calls in a row got no answer or a 5xx/429; then one probe call decides.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Iterator, NamedTuple, Optional
from urllib.parse import urlsplit

import requests
import requests.auth
import urllib3.exceptions
from requests.adapters import HTTPAdapter
from urllib3.exceptions import MaxRetryError, NewConnectionError
from urllib3.exceptions import TimeoutError as Urllib3Timeout

from dashboard.config import VERSION, ConfigError
from dashboard.cloud.breaker import CircuitBreaker, failing_status
from dashboard.cloud.retry import RETRIES, RETRY_STATUSES, read_retry, write_retry
from dashboard.web.errors import ApiError

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 3.05          # seconds (default); a little over a multiple of 3 s, the TCP retransmission window
PASS_THROUGH = frozenset({400, 404, 409})   # the upstream's own answer about the client's request
MAX_MESSAGE = 300               # characters of an upstream error message passed along
MAX_ERROR_BODY = 16 * 1024      # bytes of an upstream error body read for its message
STREAM_CHUNK = 64 * 1024        # largest read of a streamed answer
MAX_LINE = 1024 * 1024          # longest line of a streamed answer
MAX_RESPONSE_BYTES = 8 << 20    # largest upstream answer read (default of CLOUD_MAX_RESPONSE_BYTES)
MAX_CALLS = 4                   # upstream calls at once per worker (default of CLOUD_MAX_CONCURRENT_CALLS)
BROKE_OFF = 599                 # the status of a 2xx whose body broke off: a failure for the breaker
REDACTED = "[redacted]"


class BearerAuth(requests.auth.AuthBase):
    """Adds `Authorization: Bearer <key>` to each request; its repr does not show the key."""

    def __init__(self, key: str):
        self._key = key

    def __call__(self, request):
        request.headers["Authorization"] = f"Bearer {self._key}"
        return request

    def __repr__(self) -> str:
        return "BearerAuth(***)"


class Answer(NamedTuple):
    """A successful (2xx) upstream answer."""

    status: int
    body: Any
    headers: Any


class Raw(NamedTuple):
    """What one upstream call got: its status, headers and body bytes, or why the body was not used."""

    status: int
    headers: Any
    body: bytes
    problem: Optional[ApiError] = None


class CloudClient:
    """GET/POST JSON against CLOUD_API_URL with CLOUD_API_KEY; every failure is an ApiError (502/503/504/4xx)."""

    def __init__(self, base_url: str, api_key: str, read_timeout: float, allow_insecure_http: bool = False,
                 connect_timeout: float = CONNECT_TIMEOUT, breaker: Optional[CircuitBreaker] = None,
                 max_response_bytes: int = MAX_RESPONSE_BYTES, max_calls: int = MAX_CALLS):
        self.base_url = check_base_url(base_url, allow_insecure_http)
        self._key = check_key(api_key, "CLOUD_API_KEY")
        self.read_timeout = float(read_timeout)
        self.connect_timeout = float(connect_timeout)
        self.timeout = (self.connect_timeout, self.read_timeout)
        self.breaker = breaker or CircuitBreaker(0, 1)
        self.max_response_bytes = int(max_response_bytes)
        # A call runs on a thread of its own, so the request thread can give up at the deadline, however
        # slowly the upstream trickles; the bound keeps threads for /healthz and local answers.
        self.max_calls = int(max_calls)
        self._slots = threading.BoundedSemaphore(self.max_calls)
        self._calls = ThreadPoolExecutor(max_workers=self.max_calls, thread_name_prefix="cloud-call")
        self._local = threading.local()

    @classmethod
    def from_config(cls, config: dict) -> "CloudClient":
        """The client for ENVIRONMENT=cloud; ConfigError naming the variable when the settings cannot work."""
        if not config.get("CLOUD_API_URL"):
            raise ConfigError("ENVIRONMENT=cloud needs CLOUD_API_URL, the base URL of the cloud API "
                              "(e.g. https://dashboard.example.com, without /api)")
        if not config.get("CLOUD_API_KEY"):
            raise ConfigError("ENVIRONMENT=cloud needs CLOUD_API_KEY, the key the cloud API expects as "
                              "Authorization: Bearer <key>")
        breaker = CircuitBreaker.from_config(config)
        return cls(config["CLOUD_API_URL"], config["CLOUD_API_KEY"], config.get("CLOUD_TIMEOUT_SECONDS", 10),
                   bool(config.get("CLOUD_ALLOW_INSECURE_HTTP")),
                   config.get("CLOUD_CONNECT_TIMEOUT_SECONDS", CONNECT_TIMEOUT), breaker,
                   config.get("CLOUD_MAX_RESPONSE_BYTES", MAX_RESPONSE_BYTES),
                   config.get("CLOUD_MAX_CONCURRENT_CALLS", MAX_CALLS))

    # --- sessions ---

    def _session(self, kind: str) -> requests.Session:
        sessions = getattr(self._local, "sessions", None)
        if sessions is None:
            sessions = self._local.sessions = {}
        if kind not in sessions:
            session = requests.Session()
            adapter = HTTPAdapter(pool_connections=1, pool_maxsize=4,
                                  max_retries=read_retry() if kind == "read" else write_retry())
            session.mount("https://", adapter)
            session.mount("http://", adapter)
            # As session.auth (not a default header) so requests never swaps in .netrc credentials.
            session.auth = BearerAuth(self._key)
            session.headers.update({"Accept": "application/json",
                                    "User-Agent": f"training-dashboard/{VERSION} (cloud provider)"})
            sessions[kind] = session
        return sessions[kind]

    def close(self) -> None:
        """Close this thread's sessions (their pooled connections)."""
        for session in (getattr(self._local, "sessions", None) or {}).values():
            session.close()
        self._local.sessions = {}

    # --- requests ---

    def get_json(self, path: str, params: Optional[dict] = None) -> Answer:
        """GET {base}{path}?params as JSON; retried per read_retry(), all within CLOUD_TIMEOUT_SECONDS."""
        raw = self._call("GET", path, params=params)
        return Answer(raw.status, self._json(raw.body, "GET", path), raw.headers)

    def post_json(self, path: str, body: dict) -> Answer:
        """POST a JSON body; never retried. 2xx passes through with its status, 400/404/409 as ApiError."""
        raw = self._call("POST", path, json_body=body)
        return Answer(raw.status, self._json(raw.body, "POST", path), raw.headers)

    def stream_lines(self, path: str, params: Optional[dict] = None) -> Iterator[bytes]:
        """Open a streamed GET now (so its failure is an ApiError here) and return an iterator of its lines."""
        response = self._send("GET", path, params=params, stream=True)

        def lines() -> Iterator[bytes]:
            # read1 hands over whatever has arrived (iter_lines would wait for a full 64 KiB chunk).
            pending = b""
            try:
                while data := response.raw.read1(STREAM_CHUNK, decode_content=True):
                    *complete, pending = (pending + data).split(b"\n")
                    yield from (line for line in complete if line.strip())
                    if len(pending) > MAX_LINE:
                        raise ApiError(502, f"upstream stream on GET {path} has a line over {MAX_LINE} bytes")
                if pending.strip():
                    yield pending
            except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
                raise self._failure(exc, "GET", path) from None
            finally:
                response.close()

        return lines()

    def _call(self, method: str, path: str, params: Optional[dict] = None,
              json_body: Optional[dict] = None) -> Raw:
        """The upstream's 2xx answer, read whole within CLOUD_TIMEOUT_SECONDS (retries included) and at most
        CLOUD_MAX_RESPONSE_BYTES; ApiError for any other answer, for none, for one too late or too large,
        while the breaker is open, or while CLOUD_MAX_CONCURRENT_CALLS calls are under way (503 at once)."""
        if not self._slots.acquire(blocking=False):
            self.breaker.refuse_while_open()  # a failing upstream is the better reason to give
            log.warning("cloud %s %s: refused, %d upstream calls already under way", method, path, self.max_calls)
            raise ApiError(503, f"upstream busy: {self.max_calls} calls to it are under way in this worker "
                                "(CLOUD_MAX_CONCURRENT_CALLS); try again shortly", headers={"Retry-After": "1"})
        try:
            probe = self.breaker.admit()
        except ApiError:
            self._slots.release()
            raise
        deadline = time.monotonic() + self.read_timeout
        answered = False
        try:
            try:
                raw = self._calls.submit(self._read, method, path, params, json_body, deadline).result(
                    timeout=max(0.0, deadline - time.monotonic()))
            except FutureTimeout:
                log.warning("cloud %s %s: no complete answer within %gs", method, path, self.read_timeout)
                raise ApiError(504, f"upstream timed out: no complete answer to {method} {path} within "
                                    f"{self.read_timeout:g}s (CLOUD_TIMEOUT_SECONDS)") from None
            answered = not failing_status(raw.status)
        finally:
            self.breaker.record(answered, probe)
        if raw.problem is not None:
            raise raw.problem
        if not 200 <= raw.status < 300:
            raise self._status_error(raw, method, path)
        return raw

    def _read(self, method: str, path: str, params: Optional[dict], json_body: Optional[dict],
              deadline: float) -> Raw:
        """One call on a thread of the pool: the answer read to its end, its size cap or the deadline."""
        try:
            response = self._request(method, path, params, json_body, stream=True)
            try:
                ok = 200 <= response.status_code < 300
                cap = self.max_response_bytes if ok else MAX_ERROR_BODY
                declared = response.headers.get("Content-Length", "")
                if ok and declared.isdigit() and int(declared) > cap:
                    return Raw(response.status_code, response.headers, b"", self._too_large(method, path))
                chunks, size = [], 0
                try:
                    # read1: whatever has arrived, so a trickle is checked against the deadline as it comes.
                    while chunk := response.raw.read1(STREAM_CHUNK, decode_content=True):
                        chunks.append(chunk)
                        size += len(chunk)
                        if size > cap:
                            if ok:
                                return Raw(response.status_code, response.headers, b"", self._too_large(method, path))
                            break  # an error body: its start carries the message
                        if time.monotonic() > deadline:  # the caller has given up already
                            return Raw(504, response.headers, b"", ApiError(504, "upstream timed out"))
                except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
                    return Raw(BROKE_OFF if ok else response.status_code, response.headers, b"",
                               self._failure(exc, method, path))
                return Raw(response.status_code, response.headers, b"".join(chunks)[:cap])
            finally:
                response.close()
        finally:
            self._slots.release()

    def _too_large(self, method: str, path: str) -> ApiError:
        log.warning("cloud %s %s: upstream answer over %d bytes refused", method, path, self.max_response_bytes)
        return ApiError(502, f"upstream answer to {method} {path} is larger than {self.max_response_bytes} bytes "
                             "(CLOUD_MAX_RESPONSE_BYTES)")

    def _send(self, method: str, path: str, params: Optional[dict] = None, json_body: Optional[dict] = None,
              stream: bool = False) -> requests.Response:
        """The upstream's 2xx response, for a stream read by its caller; ApiError for any other answer, for
        none, or while the breaker is open."""
        probe = self.breaker.admit()
        answered = False
        try:
            response = self._request(method, path, params, json_body, stream)
            answered = not failing_status(response.status_code)
        finally:
            self.breaker.record(answered, probe)
        if not 200 <= response.status_code < 300:
            try:
                body = next(response.iter_content(MAX_ERROR_BODY), b"")
            except (requests.RequestException, OSError):
                body = b""
            finally:
                response.close()
            raise self._status_error(Raw(response.status_code, response.headers, body), method, path)
        return response

    def _request(self, method: str, path: str, params: Optional[dict], json_body: Optional[dict],
                 stream: bool) -> requests.Response:
        session = self._session("read" if method == "GET" else "write")
        started = time.monotonic()
        try:
            response = session.request(method, self.base_url + path, params=params, json=json_body,
                                       timeout=self.timeout, allow_redirects=False, stream=stream)
        except (requests.RequestException, OSError, ValueError) as exc:
            raise self._failure(exc, method, path) from None
        except Exception as exc:  # e.g. a urllib3 error requests does not wrap
            if type(exc).__module__.startswith(("urllib3", "requests", "http")):
                raise self._failure(exc, method, path) from None
            raise
        log.debug("cloud %s %s -> %s in %.0fms", method, path, response.status_code,
                  (time.monotonic() - started) * 1000)
        return response

    # --- failures ---

    def redact(self, text: str) -> str:
        """`text` without the key (an upstream may echo what it was sent)."""
        return text.replace(self._key, REDACTED) if self._key else text

    def _failure(self, exc: BaseException, method: str, path: str) -> ApiError:
        """The ApiError for a request that got no answer. The exception's text is never used: it may carry
        request details; only its class is logged."""
        if isinstance(exc, requests.exceptions.ConnectTimeout):
            log.warning("cloud %s %s: connecting timed out (%s)", method, path, type(exc).__name__)
            tries = f"{RETRIES + 1} tries" if method == "GET" else "one try"
            return ApiError(504, f"upstream timed out: could not connect for {method} {path} within "
                                 f"{self.connect_timeout:g}s (CLOUD_CONNECT_TIMEOUT_SECONDS), {tries}")
        if timed_out(exc):
            log.warning("cloud %s %s: upstream timed out (%s)", method, path, type(exc).__name__)
            return ApiError(504, f"upstream timed out: no answer to {method} {path} within "
                                 f"{self.read_timeout:g}s (CLOUD_TIMEOUT_SECONDS)")
        if isinstance(exc, requests.exceptions.SSLError):
            log.warning("cloud %s %s: TLS failed (%s)", method, path, type(exc).__name__)
            return ApiError(502, f"upstream unreachable: TLS handshake failed on {method} {path}")
        if isinstance(exc, (requests.ConnectionError, urllib3.exceptions.ProtocolError, OSError)):
            log.warning("cloud %s %s: connection failed (%s)", method, path, type(exc).__name__)
            return ApiError(502, f"upstream unreachable: could not connect or the connection broke on "
                                 f"{method} {path}")
        log.warning("cloud %s %s: request failed (%s)", method, path, type(exc).__name__)
        return ApiError(502, f"upstream request failed on {method} {path} ({type(exc).__name__})")

    def _status_error(self, raw: Raw, method: str, path: str) -> ApiError:
        status = raw.status
        log.warning("cloud %s %s: upstream answered HTTP %s", method, path, status)
        if 300 <= status < 400:
            return ApiError(502, f"upstream answered a redirect (HTTP {status}) to {method} {path}; redirects "
                                 "are not followed (check CLOUD_API_URL)")
        if status in (401, 403):
            return ApiError(502, f"upstream rejected the credentials (HTTP {status}) on {method} {path}; "
                                 "check CLOUD_API_KEY")
        if status in PASS_THROUGH:
            message, extra = self._upstream_error(raw.body)
            return ApiError(status, message or f"upstream answered HTTP {status}", extra=extra)
        retried = f" after {RETRIES} retries" if method == "GET" and status in RETRY_STATUSES else ""
        if status == 429:
            return ApiError(502, f"upstream is rate limiting (HTTP 429){retried} on {method} {path}")
        if status >= 500:
            return ApiError(502, f"upstream failed with HTTP {status}{retried} on {method} {path}")
        return ApiError(502, f"upstream answered an unexpected HTTP {status} on {method} {path}")

    def _upstream_error(self, body: bytes) -> tuple[Optional[str], dict]:
        """The `error` of an upstream JSON error body (shortened, printable, without the key) and its other
        keys (e.g. the running session_id of a 409), also without the key."""
        try:
            body = json.loads(body[:MAX_ERROR_BODY] or b"null")
        except ValueError:
            return None, {}
        if not isinstance(body, dict):
            return None, {}
        message = body.get("error")
        if isinstance(message, str) and message.strip():
            message = "".join(ch if ch.isprintable() else " " for ch in self.redact(message))[:MAX_MESSAGE]
        else:
            message = None
        extra = {k: self._redact_json(v) for k, v in body.items() if k not in ("error", "status")}
        return message, extra

    def _redact_json(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, list):
            return [self._redact_json(v) for v in value]
        if isinstance(value, dict):
            return {self.redact(str(k)): self._redact_json(v) for k, v in value.items()}
        return value

    def _json(self, body: bytes, method: str, path: str) -> Any:
        try:
            return json.loads(body)
        except (ValueError, RecursionError):
            log.warning("cloud %s %s: upstream answered invalid JSON", method, path)
            raise ApiError(502, f"upstream answered invalid JSON to {method} {path}") from None


def timed_out(exc: BaseException) -> bool:
    """Whether a requests/urllib3 failure is a timeout (connect or read), also when wrapped after retries."""
    if isinstance(exc, requests.Timeout):
        return True
    inner = exc.args[0] if exc.args else None
    if isinstance(inner, MaxRetryError):
        inner = inner.reason
    if isinstance(exc, Urllib3Timeout):
        inner = exc
    return isinstance(inner, Urllib3Timeout) and not isinstance(inner, NewConnectionError)


def check_base_url(url: str, allow_insecure_http: bool) -> str:
    """CLOUD_API_URL checked: https (http only when allowed), a host, no credentials, query or fragment."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ConfigError("CLOUD_API_URL is not a valid URL") from None
    if parts.username is not None or parts.password is not None:
        raise ConfigError("CLOUD_API_URL must not contain credentials; put the key in CLOUD_API_KEY")
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ConfigError(f"CLOUD_API_URL must be an https:// URL with a host, got {url!r}")
    if parts.scheme == "http" and not allow_insecure_http:
        raise ConfigError(f"CLOUD_API_URL must use https:// (got {url!r}): the API key would travel in clear "
                          "text. Set CLOUD_ALLOW_INSECURE_HTTP=true only for a trusted local network.")
    if parts.query or parts.fragment:
        raise ConfigError(f"CLOUD_API_URL must not have a query or fragment, got {url!r}")
    return url.rstrip("/")


def check_key(key: str, name: str) -> str:
    """A key usable in an Authorization header: printable ASCII, no spaces (never echoed in the message)."""
    if not key or not all(33 <= ord(ch) <= 126 for ch in key):
        raise ConfigError(f"{name} must be printable ASCII without spaces")
    return key
