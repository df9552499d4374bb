"""One JSON error shape for every failure under /api/ (contract: {"error", "status"})."""
from __future__ import annotations

import logging

from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)
MAX_PATH_SHOWN = 200  # characters of a requested path quoted in a 404/405 message


class ApiError(Exception):
    """An error the client should see: an HTTP status and a message naming what is wrong."""

    def __init__(self, status: int, message: str, param: str | None = None, extra: dict | None = None,
                 headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.extra = extra or {}  # more keys for the body, e.g. the running session_id of a 409
        self.headers = headers or {}  # e.g. Retry-After of a 429


def error_response(status: int, message: str, extra: dict | None = None):
    """Return the contract's JSON error body with `status` (plus any `extra` keys)."""
    response = jsonify({"error": message, "status": status, **(extra or {})})
    response.status_code = status
    return response


def _wants_json() -> bool:
    return request.path.startswith("/api/") or request.path == "/api"


def init_app(app: Flask) -> None:
    """Install handlers that turn ApiError, HTTP errors and crashes into JSON."""

    @app.errorhandler(ApiError)
    def handle_api_error(err: ApiError):
        response = error_response(err.status, err.message, err.extra)
        response.headers.update(err.headers)
        return response

    @app.errorhandler(HTTPException)
    def handle_http_error(err: HTTPException):
        if not _wants_json():
            return err
        path = request.path if len(request.path) <= MAX_PATH_SHOWN else request.path[:MAX_PATH_SHOWN] + "..."
        message = {
            404: f"no such endpoint: {path}",
            405: f"method {request.method} not allowed on {path}",
            413: f"request body too large (limit {app.config.get('MAX_CONTENT_LENGTH')} bytes)",
            415: "request body must be JSON (Content-Type: application/json)",
        }.get(err.code, err.description or err.name)
        response = error_response(err.code or 500, message)
        if err.code == 405 and getattr(err, "valid_methods", None):
            response.headers["Allow"] = ", ".join(err.valid_methods)
        return response

    @app.errorhandler(Exception)
    def handle_unexpected(err: Exception):
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal server error; the server log has the details")
