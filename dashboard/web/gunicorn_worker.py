"""gunicorn's gthread worker, answering the requests gunicorn refuses itself with the app's JSON error shape.

gunicorn refuses some requests before the app sees them: a request line over `limit_request_line` (414),
more header fields than `limit_request_fields` or one over `limit_request_field_size` (431), a request it
cannot parse (400). Its `Worker.handle_error` picks the status and message, logs them and writes the
access-log line, then answers through `gunicorn.util.write_error`, an HTML page. In this worker that
answer is `{"error": <gunicorn's message>, "status": <code>}` (errors.py's shape) with the app's headers.
"""
from __future__ import annotations

import json

from gunicorn import util
from gunicorn.workers.gthread import ThreadWorker

from dashboard.web.hardening import API_CSP

MAX_MESSAGE = 200  # characters of gunicorn's message kept (it can quote the request line it refused)
# What hardening.security_headers gives the app's JSON errors (tests/test_gunicorn_errors.py holds them equal).
HEADERS = {"Content-Type": "application/json", "X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY",
           "Referrer-Policy": "no-referrer", "Cross-Origin-Opener-Policy": "same-origin",
           "Content-Security-Policy": API_CSP, "Cache-Control": "no-store"}


def write_json_error(sock, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn's `util.write_error` (same arguments), writing the app's JSON error body."""
    message = mesg or reason
    if len(message) > MAX_MESSAGE:
        message = message[:MAX_MESSAGE] + "..."
    body = json.dumps({"error": message, "status": status_int}).encode()
    head = [f"HTTP/1.1 {status_int} {reason}", "Connection: close", *(f"{k}: {v}" for k, v in HEADERS.items()),
            f"Content-Length: {len(body)}"]
    util.write_nonblock(sock, ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)


class JsonErrorWorker(ThreadWorker):
    """gthread (`worker_class` in gunicorn.conf.py), whose own error answers are JSON."""

    def init_process(self):
        # Worker.handle_error answers through this function and nothing else in gunicorn calls it;
        # replaced in the worker process only, before it serves.
        util.write_error = write_json_error
        super().init_process()
