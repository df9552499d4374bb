"""Server-side API keys: with API_KEY set, writes under /api/ need `Authorization: Bearer <API_KEY>`.

With REQUIRE_AUTH_FOR_READS=true every /api/ read needs it too, except /api/status (health checks stay
open). So one instance in local mode can serve as the cloud API of another (whose CLOUD_API_KEY is this
API_KEY). The key is compared in constant time and never logged or echoed.
"""
from __future__ import annotations

import hmac
from typing import Callable, Optional

from flask import Flask, request

from dashboard.cloud.client import check_key
from dashboard.config import ConfigError
from dashboard.web.errors import error_response

OPEN_READS = frozenset({"/api/status"})
READ_METHODS = frozenset({"GET", "HEAD"})


def bearer_token(header: str) -> Optional[str]:
    """The token of an `Authorization: Bearer <token>` header (scheme case-insensitive), else None."""
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def key_matches(supplied: str, expected: bytes) -> bool:
    """Constant-time comparison of the supplied token with the key, as bytes."""
    # WSGI gives header values as latin-1 decoded text; encoding back gives the bytes the client sent.
    return hmac.compare_digest(supplied.encode("latin-1", errors="replace"), expected)


def unauthorized(message: str, challenge: str):
    response = error_response(401, message)
    response.headers["WWW-Authenticate"] = challenge
    return response


def key_required(config, method: str, path: str) -> bool:
    """Whether `method` on `path` needs the API key under `config` (never when API_KEY is not set)."""
    if not config.get("API_KEY") or not (path == "/api" or path.startswith("/api/")) or method == "OPTIONS":
        return False
    return method not in READ_METHODS or (bool(config.get("REQUIRE_AUTH_FOR_READS")) and path not in OPEN_READS)


def read_check(app: Flask) -> Callable[[str, str], bool]:
    """For a GET path and its Authorization header: whether the key check lets the read through."""
    key = app.config.get("API_KEY") or ""
    if not key or not app.config.get("REQUIRE_AUTH_FOR_READS"):
        return lambda path, header: True
    expected = key.encode("ascii")

    def allowed(path: str, header: str) -> bool:
        if path in OPEN_READS or not path.startswith("/api/"):
            return True
        supplied = bearer_token(header)
        return supplied is not None and key_matches(supplied, expected)

    return allowed


def init_app(app: Flask) -> None:
    """Install the key check when API_KEY is set; ConfigError for settings that cannot work."""
    key = app.config.get("API_KEY") or ""
    reads = bool(app.config.get("REQUIRE_AUTH_FOR_READS"))
    if reads and not key:
        raise ConfigError("REQUIRE_AUTH_FOR_READS=true needs API_KEY to be set")
    if not key:
        return
    expected = check_key(key, "API_KEY").encode("ascii")

    @app.before_request
    def require_api_key():
        if request.routing_exception is not None:  # no such path or method: its 404 or 405 says more than a 401
            return None
        if not key_required(app.config, request.method, request.path):
            return None
        supplied = bearer_token(request.headers.get("Authorization", ""))
        if supplied is None:
            return unauthorized("missing API key: send the header Authorization: Bearer <API_KEY>", "Bearer")
        if not key_matches(supplied, expected):
            return unauthorized("invalid API key", 'Bearer error="invalid_token"')
        return None
