"""HTTP policy for every response: security headers, ETag revalidation of GET JSON, POST rate limits,
and which client address a request comes from behind a reverse proxy.

Rate limits are counted in SQLite, so they hold across every gunicorn worker (an in-memory limiter
would allow the limit once per worker).
"""
from __future__ import annotations

import logging
import sqlite3
import time

from flask import Flask, g, request
from werkzeug.middleware.proxy_fix import ProxyFix

import database
from dashboard.web.errors import MAX_PATH_SHOWN, ApiError

log = logging.getLogger(__name__)

API_CSP = "default-src 'none'; frame-ancestors 'none'"
PAGE_CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
            "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")
RATE_WINDOW_SECONDS = 60


def security_headers(response):
    """nosniff, no framing, no referrer, a CSP; JSON answers are not stored by caches."""
    headers = response.headers
    headers["X-Content-Type-Options"] = "nosniff"
    headers["X-Frame-Options"] = "DENY"
    headers["Referrer-Policy"] = "no-referrer"
    headers["Cross-Origin-Opener-Policy"] = "same-origin"
    headers.setdefault("Content-Security-Policy", PAGE_CSP if response.mimetype == "text/html" else API_CSP)
    if not request.path.startswith("/static/"):
        headers.setdefault("Cache-Control", "no-store")
    return response


def refuse_leading_double_slash():
    """A before_request hook: a path that starts with `//` is a 404 (Werkzeug's routing strips leading
    slashes, so `//api/status` would otherwise be /api/status)."""
    path = request.environ.get("PATH_INFO", "")
    if path.startswith("//"):
        request.url_rule = None  # no route answered: counted as "unmatched" in /metrics
        shown = path if len(path) <= MAX_PATH_SHOWN else path[:MAX_PATH_SHOWN] + "..."
        raise ApiError(404, f"no such endpoint: {shown}")


def revalidate_json(response):
    """GET JSON answers carry an ETag; a matching If-None-Match gets 304 with no body."""
    if (request.method == "GET" and response.status_code == 200 and response.is_json
            and not response.is_streamed and request.path.startswith("/api/")):
        if "ETag" not in response.headers:  # a cached answer brings its own
            response.add_etag()
        # no-cache (not no-store): clients may keep the body, but must ask again each time.
        response.headers["Cache-Control"] = "no-cache, private"
        if request.if_none_match:
            response.make_conditional(request)
    return response


def rate_limit_posts(app: Flask):
    """A before_request hook: 429 once a client has made POST_RATE_LIMIT POSTs to one endpoint this minute,
    with or without a valid key (it runs before the key check)."""

    def check():
        limit = app.config["POST_RATE_LIMIT"]
        if request.method != "POST" or not request.path.startswith("/api/") or limit <= 0:
            return None
        window = int(time.time() // RATE_WINDOW_SECONDS)
        key = f"{request.remote_addr}|{request.path}"
        try:
            count = hit(database.get_db(), key, window)
        except (sqlite3.Error, database.DatabaseUnavailable) as err:
            log.warning("rate limit not checked (database unavailable): %s", err)
            return None  # fail open: the endpoint itself reports the database problem
        g.rate_limit_refused_before = count > limit + 1
        if count > limit:
            retry_after = RATE_WINDOW_SECONDS - int(time.time()) % RATE_WINDOW_SECONDS
            raise ApiError(429, f"too many requests: at most {limit} POSTs per minute to {request.path}",
                           extra={"retry_after_seconds": retry_after}, headers={"Retry-After": str(retry_after)})
        return None

    return check


def refused_before() -> bool:
    """Whether this POST's client was already refused by the rate limit in this window (the audit records the
    first refusal of a window, not each one of a flood)."""
    return g.get("rate_limit_refused_before", False)


def hit(conn: sqlite3.Connection, key: str, window: int) -> int:
    """Count one request for `key` in `window` and return the window's count so far."""
    with database.transaction(conn, read_by_provider=False):
        conn.execute("DELETE FROM rate_limits WHERE window < ?", (window - 1,))
        return conn.execute(
            "INSERT INTO rate_limits (key, window, count) VALUES (?, ?, 1)"
            " ON CONFLICT (key, window) DO UPDATE SET count = count + 1 RETURNING count", (key, window)).fetchone()[0]


def trust_proxy(app: Flask) -> None:
    """Behind TRUSTED_PROXY_HOPS reverse proxies, take the client's address and scheme from their
    X-Forwarded-For / X-Forwarded-Proto (werkzeug's ProxyFix); with 0 (the default) these headers are ignored.

    Install it last: the outermost WSGI layer, so every layer and hook sees the client's address."""
    hops = app.config["TRUSTED_PROXY_HOPS"]
    if hops > 0:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=0, x_port=0, x_prefix=0)


def init_app(app: Flask) -> None:
    """Install the `//` refusal, the headers, ETag and rate-limit hooks (the refusals first of all hooks)."""
    hooks = app.before_request_funcs.setdefault(None, [])
    # Before any other: the `//` refusal, then the rate limit (before the key check, so that a client
    # without a valid key is limited too, and its refusals cannot grow the audit without bound).
    hooks[0:0] = [refuse_leading_double_slash, rate_limit_posts(app)]
    app.after_request(revalidate_json)
    app.after_request(security_headers)  # registered last, so it runs first: later hooks see the headers
