"""Server-Sent Events under a real gunicorn, and CORS limited to the configured origins."""
from __future__ import annotations

import http.client
import json
import subprocess
import time

import pytest

from servers import Gunicorn

LOG_LINE = "{} - HolisticTrainer - ERROR - stream test: {}\n"


def start_server(tmp_path, root, **env) -> tuple[subprocess.Popen, int]:
    server = Gunicorn(root, tmp_path, GUNICORN_WORKERS="1", STREAM_HEARTBEAT_SECONDS="1",
                      STREAM_HEALTH_SECONDS="1", **env).start()
    return server.proc, server.port


class EventStream:
    """A raw SSE client: frames as (event, data) or ("comment", text)."""

    def __init__(self, port: int, timeout: float = 10):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        self.conn.request("GET", "/api/stream", headers={"Accept": "text/event-stream"})
        self.response = self.conn.getresponse()

    def frames(self):
        event, data = None, []
        while True:
            line = self.response.fp.readline()
            if not line:
                return
            line = line.decode().rstrip("\n")
            if line == "":
                if event or data:
                    yield event or "message", "\n".join(data)
                event, data = None, []
            elif line.startswith(":"):
                yield "comment", line[1:].strip()
            elif line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
            elif line.startswith("retry:"):
                yield "retry", line[6:].strip()

    def close(self):
        self.conn.close()


def test_stream_sends_snapshot_heartbeat_and_new_log_lines(orchestrator, tmp_path):
    root = orchestrator()
    proc, port = start_server(tmp_path, root)
    stream = EventStream(port)
    try:
        assert stream.response.status == 200
        assert stream.response.getheader("Content-Type").startswith("text/event-stream")
        assert stream.response.getheader("Cache-Control") == "no-cache"
        seen: dict[str, list] = {}
        frames = stream.frames()
        appended = False
        for kind, data in frames:
            seen.setdefault(kind, []).append(data)
            if {"training", "alert", "health", "comment", "retry"} <= set(seen) and not appended:
                log = next((root / "logs").glob("*.log"))
                with open(log, "a", encoding="utf-8") as fh:
                    fh.write(LOG_LINE.format(time.strftime("%Y-%m-%d %H:%M:%S,000"), "disk almost full"))
                appended = True
            if kind == "log" and "stream test" in data:
                break
        training = json.loads(seen["training"][0])
        assert training["is_running"] is False and "phase_durations" in training
        health = json.loads(seen["health"][0])
        assert 0 <= health["memory_percent"] <= 100
        assert isinstance(json.loads(seen["alert"][0]), list)
        assert "ping" in seen["comment"] and seen["retry"] == ["3000"]
        event = json.loads(seen["log"][-1])
        assert event["level"] == "ERROR" and event["message"] == "stream test: disk almost full"
    finally:
        stream.close()
        proc.terminate()
        proc.communicate(timeout=30)


def test_streams_past_the_cap_get_503_and_stop_ends_open_streams(orchestrator, tmp_path):
    proc, port = start_server(tmp_path, orchestrator(), STREAM_MAX_CLIENTS="1")
    first = EventStream(port)
    try:
        frames = first.frames()
        assert next(frames)[0] == "retry"
        second = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        second.request("GET", "/api/stream")
        refused = second.getresponse()
        body = json.loads(refused.read())
        second.close()
        assert refused.status == 503 and "too many open streams" in body["error"]
        # Ordinary requests are still served while the stream is open.
        rest = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        rest.request("GET", "/api/agents/status")
        status = rest.getresponse().status
        rest.close()
        assert status == 200
        proc.terminate()  # SIGTERM: the open stream ends and the server exits cleanly
        for _ in frames:
            pass
        assert proc.wait(timeout=15) == 0
    finally:
        first.close()
        if proc.poll() is None:
            proc.kill()
        _, stderr = proc.communicate(timeout=30)
    assert b"Traceback" not in stderr and b"WORKER TIMEOUT" not in stderr


@pytest.mark.parametrize("origin,allowed", [
    ("http://localhost:3000", True),
    ("http://localhost:5173", True),
    ("https://evil.example", False),
    ("http://localhost:3000.evil.example", False),
    ("HTTP://LOCALHOST:3000", False),
])
def test_cors_allows_only_the_configured_origins(client, origin, allowed):
    response = client.get("/api/agents/status", headers={"Origin": origin})
    preflight = client.options("/api/storyboard/project/create", headers={
        "Origin": origin, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type"})
    for answer in (response, preflight):
        assert answer.headers.get("Access-Control-Allow-Origin") == (origin if allowed else None)
        assert "Origin" in answer.headers.get("Vary", "")
        assert answer.headers.get("Access-Control-Allow-Credentials") is None
        assert answer.headers.get("Access-Control-Allow-Private-Network") is None
    if allowed:
        assert "authorization" in preflight.headers["Access-Control-Allow-Headers"].lower()
        assert "X-Data-Warnings" in response.headers["Access-Control-Expose-Headers"]


def test_cors_origins_come_from_the_environment(make_app, orchestrator):
    client = make_app(orchestrator(), CORS_ORIGINS=["https://dash.example.com"]).test_client()
    ok = client.get("/api/status", headers={"Origin": "https://dash.example.com"})
    assert ok.headers["Access-Control-Allow-Origin"] == "https://dash.example.com"
    dev = client.get("/api/status", headers={"Origin": "http://localhost:3000"})
    assert "Access-Control-Allow-Origin" not in dev.headers
    closed = make_app(orchestrator(), CORS_ORIGINS=[]).test_client()
    assert "Access-Control-Allow-Origin" not in closed.get("/api/status", headers={
        "Origin": "http://localhost:3000"}).headers


def test_a_closed_stream_frees_its_place(orchestrator, tmp_path):
    proc, port = start_server(tmp_path, orchestrator(), STREAM_MAX_CLIENTS="1")
    try:
        for _ in range(3):  # connect, read a frame, hang up: the slot must come back each time
            stream = EventStream(port)
            assert stream.response.status == 200 and next(stream.frames())[0] == "retry"
            stream.close()
            deadline = time.monotonic() + 10  # the server notices at its next write (heartbeat 1 s)
            while True:
                probe = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                probe.request("GET", "/api/stream")
                answer = probe.getresponse()
                status = answer.status
                probe.close()
                if status == 200 or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            assert status == 200
            time.sleep(2.5)  # let the probe's own stream be noticed as closed too
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
