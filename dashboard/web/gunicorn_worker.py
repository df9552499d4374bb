"""gunicorn's gthread worker, answering the requests gunicorn refuses itself with the app's JSON error shape,
and closing a kept-alive connection after GUNICORN_KEEPALIVE_REQUESTS requests.

gunicorn refuses some requests before the app sees them: a request line over `limit_request_line` (414),
more header fields than `limit_request_fields` or one over `limit_request_field_size` (431), a request it
cannot parse (400). Its `Worker.handle_error` picks the status and message, logs them and writes the
access-log line, then answers through `gunicorn.util.write_error`, an HTML page. In this worker that
answer is `{"error": <gunicorn's message>, "status": <code>}` (errors.py's shape) with the app's headers.

A kept-alive connection stays with the worker that accepted it. When a worker is replaced (max_requests,
a reload), its clients reconnect to the workers then running, and a client that never lets a connection
go idle (a proxy's upstream keepalive, a busy poller) would stay there, leaving the new worker idle. Ending
each connection after a number of requests, as nginx (`keepalive_requests`) and Apache
(`MaxKeepAliveRequests`) do, spreads connections over the workers again within seconds.
"""
from __future__ import annotations

import json
import os

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


def keepalive_requests() -> int:
    """GUNICORN_KEEPALIVE_REQUESTS: requests served on one connection before it is closed (0: no limit)."""
    return max(0, int(os.environ.get("GUNICORN_KEEPALIVE_REQUESTS", "100")))


class JsonErrorWorker(ThreadWorker):
    """gthread (`worker_class` in gunicorn.conf.py), whose own error answers are JSON, ending a connection
    after keepalive_requests() requests."""

    per_connection = 0

    def handle_request(self, req, conn):
        served = getattr(conn, "served", 0) + 1
        conn.served = served
        if self.per_connection and served >= self.per_connection:
            req.must_close = True  # this answer says "Connection: close" and gunicorn closes after it
        return super().handle_request(req, conn)

    def init_process(self):
        # Worker.handle_error answers through this function and nothing else in gunicorn calls it;
        # replaced in the worker process only, before it serves.
        util.write_error = write_json_error
        self.per_connection = keepalive_requests()
        super().init_process()
