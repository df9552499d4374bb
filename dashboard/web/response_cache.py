"""A short per-process cache of GET /api/ JSON answers (and /healthz, and the API reference page /api/docs), so
many pollers cost one computation.

Within RESPONSE_CACHE_SECONDS an answer is served again exactly as it was sent, headers included, by a
WSGI layer in front of Flask: a cache hit skips routing and every hook, and is only logged and counted.
Answers are kept per path, the query parameters the endpoint reads (its row's query model; others, such
as a browser's `_=` cache-buster, do not make another entry) and Origin (the CORS headers differ by origin),
and only for readers the key check lets through (auth.read_check: the same decision as for the request
itself, made for every replay, so a revoked key or one without the scope is never answered from here).
`If-None-Match` is answered here: a matching ETag gets a 304. 0 turns the cache off. Memory is bounded by
RESPONSE_CACHE_MAX_BYTES (bodies and headers, the least recently used dropped first), and an answer is
dropped once it has expired unless it is being recomputed.

Writes show at once on every worker: each answer carries the generation of its path (store.generations.Generations,
counters in SQLite read before the answer is computed), and is replayed only while that is unchanged. A
successful POST bumps the counters of the areas it changes (changed_by) before its answer is sent, so the
next read on any worker computes afresh; a POST in this process also forgets those areas' answers here at
once, whatever its outcome. When an answer has only expired, one request recomputes it while others get
the previous one; after a write, nobody gets the previous one. When the generation cannot be read, the
TTL alone bounds an answer's age, as it does for changes that are not API writes (the orchestrator's files).

An answer asked for in the last quarter of its life is computed again in the background (one thread per
worker), and the kept one is served meanwhile: a polled answer stays fresh without a poller ever waiting
for its computation (under load those waits were the slowest 1% of answers). Nothing older than the TTL
is served.
"""
from __future__ import annotations

import io
import logging
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, NamedTuple, Optional
from urllib.parse import parse_qsl

from flask import Flask, request
from werkzeug.http import parse_etags, unquote_etag

from dashboard.web import auth
from dashboard.store import audit, generations
from dashboard import caching
import database
from dashboard.web import endpoints
from dashboard.web import monitoring
log = logging.getLogger(__name__)

UNCACHED = ("/api/stream", "/api/logs/export")
ALSO_CACHED = frozenset({"/healthz"})  # liveness: a replay shows the worker answers as well as a fresh one
ENTRY_BYTES = 512  # charged for every answer besides its body and headers: key, tuple, ETag
PATHS_REMEMBERED = 4096  # paths whose endpoint's query parameters are remembered (then forgotten at once)
KEPT_TYPES = ("application/json", "text/html")  # under /api/, text/html is the API reference page
NOT_IN_304 = frozenset({"content-type", "content-length"})
REFRESH_BEFORE = 0.25  # of the TTL: a hit this close to its answer's expiry recomputes it in the background


class Answer(NamedTuple):
    body: bytes
    headers: list
    etag: Optional[str]
    endpoint: str
    cost: int  # bytes charged against the budget


def answer_of(body: bytes, headers: list, endpoint: str) -> Answer:
    """A 200 answer as kept: its ETag unquoted, charged its body, headers and ENTRY_BYTES."""
    etag = next((v for k, v in headers if k.lower() == "etag"), None)
    cost = ENTRY_BYTES + len(body) + sum(len(k) + len(v) for k, v in headers)
    return Answer(body, headers, etag and unquote_etag(etag)[0], endpoint, cost)


class ResponseCache:
    """Answers by key within `max_bytes`, each for `ttl` seconds while its path's generation is unchanged
    (caching.Cache: one request computes a key at a time)."""

    def __init__(self, ttl: float, max_bytes: int):
        self.ttl = ttl
        self.max_bytes = max_bytes
        # The clock is looked up at each call: tests step this module's `time`.
        self.answers = caching.Cache(max_bytes, sizeof=lambda answer: answer.cost, ttl=ttl,
                                     timer=lambda: time.monotonic())
        # Its thread starts at the first refresh, in the worker (never in a --preload master).
        self.refresher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="answer-refresh")

    def __len__(self) -> int:
        return len(self.answers)

    @property
    def bytes(self) -> int:
        """What the kept answers are charged."""
        return self.answers.size

    def get(self, key: tuple) -> Optional[Answer]:
        """The answer kept under key, fresh or only expired."""
        entry = self.answers.entry(key)
        return None if entry is None else entry.value

    def clear(self, prefixes: tuple[str, ...] = ("/",)) -> None:
        """Forget the answers whose path starts with one of `prefixes`."""
        self.answers.clear(lambda key: key[0].startswith(prefixes))


class CachedAnswers:
    """WSGI middleware: serves fresh cached GET answers, and stores the 200 JSON (and HTML) answers of the app.

    `generation(path)` is the current generation of a path (None when unknown: the TTL alone decides)."""

    def __init__(self, wsgi_app: Callable, cache: ResponseCache, may_read: Callable[[str, str], bool],
                 generation: Callable[[str], Optional[int]] = lambda path: None,
                 params_of: Callable[[str], tuple] = lambda path: ()):
        self.wsgi_app = wsgi_app
        self.cache = cache
        self.may_read = may_read
        self.generation = generation
        self.params_of = params_of  # the query parameters the endpoint of a path reads

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        key = self._key(environ)
        if key is None:
            return self.wsgi_app(environ, start_response)
        started = time.perf_counter()
        ran: list = []

        def run():
            ran.append(self._run(environ))
            return ran[0]
        # stale: while another request recomputes an answer that has only expired, the last one will do.
        generation = lambda: self.generation(key[0])  # noqa: E731
        answer = self.cache.answers.get_or_compute(key, run, generation, stale=True, keep=is_answer)
        if not ran:  # kept, or computed by another request
            self._refresh_if_due(key, environ, generation)
            return self._replay(answer, environ, start_response, started)
        if not isinstance(answer, Answer):
            status, headers, body = answer
            start_response(status, headers)
            return [body]
        return self._answer(answer, environ, start_response)

    def _refresh_if_due(self, key: tuple, environ: dict, generation: Callable[[], Optional[int]]) -> None:
        answers = self.cache.answers
        if answers.expires_within(key, self.cache.ttl * REFRESH_BEFORE):
            detached = {name: value for name, value in environ.items() if not name.startswith("gunicorn.")}
            detached.update({"wsgi.input": io.BytesIO(b""), "CONTENT_LENGTH": "0", monitoring.REFRESH_KEY: True})
            answers.refresh_in_background(key, lambda: self._run(detached), generation,
                                          self.cache.refresher.submit, keep=is_answer)

    def _key(self, environ: dict) -> Optional[tuple]:
        path = environ.get("PATH_INFO", "")
        if environ.get("REQUEST_METHOD") != "GET" or not (
                (path.startswith("/api/") and not path.startswith(UNCACHED)) or path in ALSO_CACHED):
            return None
        if not self.may_read(path, environ.get("HTTP_AUTHORIZATION", "")):
            return None
        return path, self._query(path, environ.get("QUERY_STRING", "")), environ.get("HTTP_ORIGIN", "")

    def _query(self, path: str, query: str) -> tuple:
        """((name, value), ...) of the parameters the endpoint reads, each occurrence (a repeated one is
        a 400, never the answer of its first value)."""
        if not query:
            return ()
        names = self.params_of(path)
        if not names:
            return ()
        read = [(name, value) for name, value in parse_qsl(query, keep_blank_values=True, errors="werkzeug.url_quote")
                if name in names]
        return tuple(sorted(read))

    def _run(self, environ: dict):
        """Run the app without the conditional header (so a 200 can be kept): the Answer of a 200 JSON or HTML
        answer, else (status, headers, body) to send as it is."""
        if_none_match = environ.pop("HTTP_IF_NONE_MATCH", None)
        captured: list = []

        def capture(status, headers, exc_info=None):
            captured[:] = [status, headers]
            return lambda data: None  # Flask never uses write()

        app_iter = self.wsgi_app(environ, capture)
        try:
            body = b"".join(app_iter)
        finally:
            if hasattr(app_iter, "close"):
                app_iter.close()
        if if_none_match is not None:
            environ["HTTP_IF_NONE_MATCH"] = if_none_match
        status, headers = captured
        content_type = next((v for k, v in headers if k.lower() == "content-type"), "")
        if not (status.startswith("200") and content_type.startswith(KEPT_TYPES)):
            return status, headers, body
        return answer_of(body, headers, environ.get(monitoring.ENDPOINT_KEY, "unmatched"))

    def _replay(self, entry: Answer, environ: dict, start_response: Callable, started: float) -> Iterable[bytes]:
        answer = self._answer(entry, environ, start_response)
        status = 304 if not answer else 200
        monitoring.record_request("GET", environ.get("PATH_INFO", ""), entry.endpoint, status,
                                  time.perf_counter() - started)
        return answer

    @staticmethod
    def _answer(entry: Answer, environ: dict, start_response: Callable) -> list:
        if_none_match = environ.get("HTTP_IF_NONE_MATCH")
        if entry.etag is not None and if_none_match and parse_etags(if_none_match).contains_weak(entry.etag):
            start_response("304 NOT MODIFIED", [(k, v) for k, v in entry.headers if k.lower() not in NOT_IN_304])
            return []
        start_response("200 OK", entry.headers)
        return [entry.body]


def is_answer(result) -> bool:
    """Whether what _run() gave is an answer to keep (a 200 JSON or HTML one)."""
    return isinstance(result, Answer)


def changed_by(post_path: str) -> tuple[str, ...]:
    """The GET paths a POST may change: its own area (/api/<area>/), and for training also the dashboard
    and system areas (a run's start and end are events, and the overview shows it)."""
    area = post_path.split("/")[2] if post_path.startswith("/api/") and post_path.count("/") >= 2 else ""
    if not area:
        return ("/",)
    if area == "training":
        return ("/api/training/", "/api/dashboard/", "/api/system/")
    return (f"/api/{area}/", audit.AUDIT_PATH)  # every write is an audit row


def query_params_of(app: Flask) -> Callable[[str], frozenset]:
    """path -> the query parameters its GET endpoint reads (its row's query model); none when no row."""
    row_of = endpoints.get_row_of_path(app, PATHS_REMEMBERED)
    by_row: dict = {}

    def params_of(path: str) -> frozenset:
        row = row_of(path)
        names = by_row.get(row)
        if names is None:
            names = by_row[row] = frozenset(endpoints.query_names(row))
        return names
    return params_of


def init_app(app: Flask) -> None:
    """Put the cache in front of the app; a POST (past the key check) empties its areas here, and a
    successful one bumps their generation for every worker (also for the cloud provider's cache)."""
    ttl = app.config["RESPONSE_CACHE_SECONDS"]
    cloud_cache = app.config["ENVIRONMENT"] == "cloud" and app.config.get("CLOUD_CACHE_SECONDS", 0) > 0
    if ttl <= 0 and not cloud_cache:
        return  # nothing caches answers: nothing to tell the other workers

    @app.before_request
    def bump_with_the_write():
        if request.method == "POST":
            database.bump_with_the_requests_write(changed_by(request.path))

    @app.after_request
    def bump_on_post(response):
        if request.method != "POST":
            return response
        if not 200 <= response.status_code < 300:
            database.drop_rider(database.GENERATIONS_RIDER)  # nothing changed: the audit's own write must not count
            return response
        try:
            database.commit_pending_generations()
        except (sqlite3.Error, database.DatabaseUnavailable) as err:  # the write itself succeeded
            log.warning("cache generation not bumped (other workers catch up within their TTL): %s", err)
        return response

    if ttl <= 0:
        return
    cache = ResponseCache(ttl, app.config["RESPONSE_CACHE_MAX_BYTES"])
    app.extensions["response_cache"] = cache
    app.wsgi_app = CachedAnswers(app.wsgi_app, cache, auth.read_check(app),
                                 generations.generations(app.config["DATABASE_PATH"]).stamp, query_params_of(app))

    @app.before_request
    def clear_on_post():
        if request.method == "POST":
            cache.clear(changed_by(request.path))
