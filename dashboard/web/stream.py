"""GET /api/stream: Server-Sent Events for the dashboard (training, health, alert, log), through the provider.

Each open stream holds one gunicorn thread, so streams are capped per process (503 past the cap) and
end by themselves after STREAM_MAX_SECONDS (the browser reconnects), when the worker is stopping, or as
soon as the client hangs up (not only at the next write that fails).
"""
from __future__ import annotations

import json
import select
import threading
import time
from typing import Iterator

from flask import Response, current_app, request, stream_with_context

from dashboard.web.errors import ApiError

# Set by gunicorn.conf.py when the worker is asked to stop, so open streams end at once.
shutting_down = threading.Event()
_open = 0
_open_lock = threading.Lock()

POLL_SECONDS = 1.0
WAKE_SECONDS = 0.25  # how often a waiting stream looks at `shutting_down`
RETRY_MS = 3000
# Linux reports a client's close (FIN) as POLLRDHUP without reading the socket, a reset as POLLHUP/POLLERR.
HANG_UP = getattr(select, "POLLRDHUP", 0)


def sse(event: str, data) -> str:
    """One Server-Sent Event frame."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def _body(payload) -> dict | list:
    data, warnings = payload
    return {**data, "warnings": list(warnings)} if isinstance(data, dict) else data


def _hang_up_watch(sock):
    """A poll object that fires when the client of `sock` hangs up, or None where that cannot be told."""
    if sock is None or not HANG_UP:
        return None
    watch = select.poll()
    watch.register(sock, HANG_UP)  # POLLHUP, POLLERR and POLLNVAL are always reported
    return watch


def _pause(watch) -> bool:
    """Wait POLL_SECONDS, or less when the worker stops; True as soon as the client has hung up."""
    if watch is None:
        shutting_down.wait(POLL_SECONDS)
        return False
    deadline = time.monotonic() + POLL_SECONDS
    while not shutting_down.is_set() and (left := deadline - time.monotonic()) > 0:
        if watch.poll(min(left, WAKE_SECONDS) * 1000):
            return True
    return False


def events(provider, config: dict, sock=None) -> Iterator[str]:
    """The stream's frames: a snapshot, then each change, with a heartbeat comment in between.

    `sock` is the client's connection (gunicorn's); without it a hang-up shows only when a write fails.
    """
    watch = _hang_up_watch(sock)
    heartbeat, health_every = config["STREAM_HEARTBEAT_SECONDS"], config["STREAM_HEALTH_SECONDS"]
    deadline = time.monotonic() + config["STREAM_MAX_SECONDS"]
    last = {"training": None, "alert": None}
    seen_logs: set[tuple] = set()
    next_health = next_beat = 0.0
    yield f"retry: {RETRY_MS}\n\n"
    first = True
    while not shutting_down.is_set() and time.monotonic() < deadline:
        now = time.monotonic()
        for event, read in (("training", provider.training_status), ("alert", provider.system_alerts)):
            try:
                body = _body(read())
            except ApiError as err:
                body = None
                yield f": {event} unavailable: {err.message}\n\n"
            if body is not None and body != last[event]:
                last[event] = body
                yield sse(event, body)
        if now >= next_health:
            next_health = now + health_every
            try:
                yield sse("health", _body(provider.system_health()))
            except ApiError:
                pass
        try:
            logs = _body(provider.recent_logs(20, None))
        except ApiError:
            logs = []
        fresh = [e for e in reversed(logs) if (e["timestamp"], e["level"], e["message"]) not in seen_logs]
        seen_logs.update((e["timestamp"], e["level"], e["message"]) for e in logs)
        if not first:  # the snapshot's log lines are already on the page (it fetched /logs/recent)
            for event in fresh:
                yield sse("log", event)
        first = False
        if now >= next_beat:
            next_beat = now + heartbeat
            yield ": ping\n\n"
        if _pause(watch):
            return


def stream():
    """Server-Sent Events: `training`, `health`, `alert` and `log`, and a heartbeat comment every 15 s."""
    config = current_app.config
    if _open >= config["STREAM_MAX_CLIENTS"]:
        raise ApiError(503, f"too many open streams ({config['STREAM_MAX_CLIENTS']} per process); poll instead")
    provider = current_app.extensions["provider"]
    sock = request.environ.get("gunicorn.socket")

    def generate():
        # Counted from the first frame on: a generator that never starts never runs its `finally`.
        global _open
        with _open_lock:
            _open += 1
        try:
            yield from events(provider, config, sock)
        finally:
            with _open_lock:
                _open -= 1

    response = Response(stream_with_context(generate()), mimetype="text/event-stream")
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"
    return response
