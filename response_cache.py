"""A short per-process cache of GET /api/ JSON answers, so many pollers cost one computation.

Within RESPONSE_CACHE_SECONDS an answer is served again as it was. When it has expired, one request
recomputes it while others get the previous answer; a POST in this process empties the cache (other
workers catch up within RESPONSE_CACHE_SECONDS). 0 turns the cache off.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import NamedTuple, Optional

from flask import Flask, Response, g, request

UNCACHED = ("/api/stream", "/api/logs/export")
MAX_ENTRIES = 256


class Entry(NamedTuple):
    expires: float
    body: bytes
    headers: list


class ResponseCache:
    """GET answers by full path, each with the lock held by the request that is recomputing it."""

    def __init__(self, ttl: float):
        self.ttl = ttl
        self._entries: "OrderedDict[str, Entry]" = OrderedDict()
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def get(self, key: str) -> Optional[Entry]:
        with self._guard:
            return self._entries.get(key)

    def lock_for(self, key: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def put(self, key: str, response: Response) -> None:
        if "ETag" not in response.headers:
            response.add_etag()  # computed once per cached answer, not per replay
        headers = [(k, v) for k, v in response.headers.items() if k.lower() not in ("date", "content-length")]
        with self._guard:
            self._entries[key] = Entry(time.monotonic() + self.ttl, response.get_data(), headers)
            self._entries.move_to_end(key)
            while len(self._entries) > MAX_ENTRIES:
                gone, _ = self._entries.popitem(last=False)
                self._locks.pop(gone, None)

    def clear(self) -> None:
        with self._guard:
            self._entries.clear()


def _cacheable() -> bool:
    return request.method == "GET" and request.path.startswith("/api/") and not request.path.startswith(UNCACHED)


def init_app(app: Flask) -> None:
    """Serve fresh cached answers before the view runs; store new 200 JSON answers after it."""
    ttl = app.config["RESPONSE_CACHE_SECONDS"]
    if ttl <= 0:
        return
    cache = ResponseCache(ttl)
    app.extensions["response_cache"] = cache

    def replay(entry: Entry) -> Response:
        return Response(entry.body, status=200, headers=entry.headers)

    @app.before_request
    def serve_cached():
        if request.method == "POST":
            cache.clear()
            return None
        if not _cacheable():
            return None
        key = request.full_path
        entry = cache.get(key)
        if entry is not None and entry.expires > time.monotonic():
            return replay(entry)
        lock = cache.lock_for(key)
        if not lock.acquire(blocking=entry is None):
            return replay(entry)  # another request is recomputing it: the previous answer will do
        fresh = cache.get(key)
        if fresh is not None and fresh.expires > time.monotonic():  # computed while we waited
            lock.release()
            return replay(fresh)
        g.response_cache = (key, lock)
        return None

    @app.after_request
    def store(response):
        pending = g.get("response_cache")
        if pending and response.status_code == 200 and response.is_json and not response.is_streamed:
            cache.put(pending[0], response)
        return response

    @app.teardown_request
    def release(_exc):
        pending = g.pop("response_cache", None)
        if pending:
            pending[1].release()
