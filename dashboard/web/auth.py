"""API keys and scopes (docs/access.md): who may do what, checked before every request and by the response cache.

Each route's row says the scope it needs (endpoints.SCOPES): `open` (the page, /healthz, /readyz, GET
/api/status), `read` (GETs), `operate` (training start and stop) or `admin` (every other write, the audit).
A key is API_KEY (an admin key) or a named key of the keys table (dashboard/store/api_keys.py). While no key
exists, everything is open and writes are anonymous (a cloud proxy refuses them, unless
CLOUD_ALLOW_ANONYMOUS_WRITES). Once one exists, operate and admin need a key of that scope or above, and
REQUIRE_AUTH_FOR_READS makes reads (and /metrics) need a read key. A missing, unknown, expired or revoked
key gets 401; a valid key without the scope gets 403 naming it. Keys are compared in constant time and
never logged or echoed.
"""
from __future__ import annotations

import hmac
import logging
import sqlite3
from typing import Callable, NamedTuple, Optional

from flask import Flask, current_app, g, request

import database
from dashboard.cloud.client import check_key
from dashboard.store import api_keys
from dashboard.web import endpoints, keys_cli
from dashboard.web.errors import error_response

log = logging.getLogger(__name__)

READ_METHODS = frozenset({"GET", "HEAD"})
ANONYMOUS = "anonymous"
PROXY_NEEDS_KEYS = ("this cloud proxy takes no writes until it has API keys of its own: set API_KEY or run"
                    " `flask --app app keys create NAME --scope operate|admin` on it (or set"
                    " CLOUD_ALLOW_ANONYMOUS_WRITES=true)")


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


def key_required(config, scope: str, method: str = "GET") -> bool:
    """Whether API_KEY guards a route of `scope` (what the OpenAPI document states; named keys aside)."""
    if not config.get("API_KEY") or scope == "open" or method == "OPTIONS":
        return False
    return scope != "read" or bool(config.get("REQUIRE_AUTH_FOR_READS"))


def scope_of(row: Optional[endpoints.Endpoint], method: str, path: str) -> str:
    """The scope a request needs: its row's; for a route without a row, read or admin under /api/, else open."""
    if row is not None:
        return row.scope
    if not (path == "/api" or path.startswith("/api/")):
        return "open"
    return "read" if method in READ_METHODS else "admin"


class Decision(NamedTuple):
    status: int  # 0: let through; else 401 or 403
    message: str
    caller: Optional[str]  # the valid key's name (also on a 403), ANONYMOUS while no key exists, else None


class Gate:
    """Decides each request from its method, the scope it needs and its Authorization header."""

    def __init__(self, config: dict, ring: api_keys.KeyRing):
        key = config.get("API_KEY") or ""
        self.api_key = check_key(key, "API_KEY").encode("ascii") if key else None
        self.reads_need_key = bool(config.get("REQUIRE_AUTH_FOR_READS"))
        self.proxy_refuses = (config.get("ENVIRONMENT") == "cloud"
                              and not config.get("CLOUD_ALLOW_ANONYMOUS_WRITES"))
        self.ring = ring

    def keys_configured(self) -> bool:
        """API_KEY is set or a named key was ever created (sqlite3.Error when the table is unreadable)."""
        return self.api_key is not None or self.ring.configured()

    def identify(self, token: str) -> Optional[api_keys.Key]:
        """The key `token` is, else None: both API_KEY and the named keys are always compared."""
        is_api_key = self.api_key is not None and key_matches(token, self.api_key)
        named = self.ring.check(token)
        return api_keys.Key("API_KEY", "admin") if is_api_key else named

    def decide(self, method: str, scope: str, header: str) -> Decision:
        """Let through, or 401/403 with the message to send."""
        if scope == "open" or method == "OPTIONS" or (scope == "read" and not self.reads_need_key):
            return Decision(0, "", None)
        if scope != "read" and not self.keys_configured():
            if method not in READ_METHODS and self.proxy_refuses:
                return Decision(403, PROXY_NEEDS_KEYS, None)
            return Decision(0, "", ANONYMOUS)
        token = bearer_token(header)
        if token is None:
            return Decision(401, "missing API key: send the header Authorization: Bearer <key>", None)
        key = self.identify(token)
        if key is None:
            return Decision(401, "invalid API key (unknown, expired or revoked)", None)
        if not api_keys.allows(key.scope, scope):
            return Decision(403, f"this needs a key with the {scope} scope; the key {key.name} has the"
                                 f" {key.scope} scope", key.name)
        return Decision(0, "", key.name)


def gate_of(app: Flask) -> Gate:
    """The app's Gate (init_app)."""
    return app.extensions["auth_gate"]


def caller() -> Optional[str]:
    """Who makes this request: the key's name, ANONYMOUS while no key exists, else None (also for a request
    answered before its key was checked: no such route, the rate limit)."""
    if "api_caller" in g:
        return g.api_caller
    try:
        gate = gate_of(current_app)
        if not gate.keys_configured():
            return ANONYMOUS
        token = bearer_token(request.headers.get("Authorization", ""))
        key = gate.identify(token) if token is not None else None
    except sqlite3.Error:
        return None
    return key.name if key else None


def path_scopes(app: Flask) -> Callable[[str], str]:
    """path -> the scope a GET of it needs (the route's row)."""
    row_of = endpoints.get_row_of_path(app)
    return lambda path: scope_of(row_of(path), "GET", path)


def read_check(app: Flask) -> Callable[[str, str], bool]:
    """For a GET path and its Authorization header: whether the key check lets the read through (the
    response cache replays an answer only then; an unreadable keys table lets nothing through it)."""
    gate, scope = gate_of(app), path_scopes(app)

    def allowed(path: str, header: str) -> bool:
        try:
            return gate.decide("GET", scope(path), header).status == 0
        except sqlite3.Error:
            return False
    return allowed


def _announce(app: Flask, gate: Gate) -> None:
    """Say at start-up how writes are guarded (without keeping a connection open in a preloading master)."""
    try:
        conn = database.connect(app.config["DATABASE_PATH"])
        try:
            named = conn.execute("SELECT COUNT(*) FROM api_keys WHERE revoked_at IS NULL").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error:
        named = 0
    keyed = gate.api_key is not None or named > 0
    if gate.reads_need_key and not keyed:
        log.warning("REQUIRE_AUTH_FOR_READS=true but no API key exists: every read answers 401 until one is"
                    " created (flask --app app keys create NAME --scope read)")
    if app.config["ENVIRONMENT"] != "cloud":
        return
    if keyed:
        log.info("cloud proxy: writes need a key of this proxy (%s)", "API_KEY and named keys" if named else "API_KEY")
    elif app.config.get("CLOUD_ALLOW_ANONYMOUS_WRITES"):
        log.warning("cloud proxy: anyone may write through it (CLOUD_ALLOW_ANONYMOUS_WRITES=true, no key of its own)")
    else:
        log.warning("cloud proxy: writes are refused (403) until it has keys of its own: set API_KEY or run"
                    " `flask --app app keys create`, or set CLOUD_ALLOW_ANONYMOUS_WRITES=true")


def init_app(app: Flask) -> None:
    """Install the scope check before every request (after database.init_app: the keys are in its tables)."""
    ring = api_keys.KeyRing(app.config["DATABASE_PATH"], app.config.get("API_KEY_LAST_USED_SECONDS", 60))
    gate = app.extensions["auth_gate"] = Gate(app.config, ring)
    app.cli.add_command(keys_cli.keys)
    _announce(app, gate)

    @app.before_request
    def require_scope():
        if request.routing_exception is not None:  # no such path or method: its 404 or 405 says more than a 401
            return None
        row = endpoints.rows_of(app).get(request.url_rule.endpoint)
        decision = gate.decide(request.method, scope_of(row, request.method, request.path),
                               request.headers.get("Authorization", ""))
        g.api_caller = decision.caller
        if decision.status == 401:
            challenge = "Bearer" if "missing" in decision.message else 'Bearer error="invalid_token"'
            return unauthorized(decision.message, challenge)
        if decision.status == 403:
            return error_response(403, decision.message)
        return None
