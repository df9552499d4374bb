"""Server-Sent Events under a real gunicorn, and CORS limited to the configured origins."""
from __future__ import annotations

import http.client
import json
import re
import signal
import socket
import struct
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import psutil
import pytest

from conftest import poll
from servers import Gunicorn

LOG_LINE = "{} - HolisticTrainer - ERROR - stream test: {}\n"


def start_server(tmp_path, root, **env) -> tuple[subprocess.Popen, int]:
    server = Gunicorn(root, tmp_path, **{"GUNICORN_WORKERS": "1", "STREAM_HEARTBEAT_SECONDS": "1",
                                         "STREAM_HEALTH_SECONDS": "1", **env}).start()
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
            line = self.response.readline()  # through the chunked framing: a stream that ends ends here
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


def test_a_worker_recycled_after_max_requests_ends_its_streams_and_exits_cleanly(orchestrator, tmp_path):
    """Recycling after GUNICORN_MAX_REQUESTS sends no signal: the open stream must end all the same, or the
    old worker waits out graceful_timeout (20 s) and is killed with a WORKER TIMEOUT (then the stream ends too,
    so the log, not the time it took, tells the two apart)."""
    proc, port = start_server(tmp_path, orchestrator(), GUNICORN_MAX_REQUESTS="10")
    stream = EventStream(port, timeout=60)
    try:
        frames = stream.frames()
        assert next(frames)[0] == "retry"
        first_worker = psutil.Process(proc.pid).children()[0].pid
        for _ in range(16):  # past max_requests (10 + a jitter of up to 5) with the stream's own request
            rest = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            rest.request("GET", "/api/status")
            assert rest.getresponse().status == 200
            rest.close()
        for _ in frames:  # the stream ends when its worker retires
            pass
        poll(lambda: [c.pid for c in psutil.Process(proc.pid).children()], lambda pids: first_worker not in pids, 15)
    finally:
        stream.close()
        proc.terminate()
        _, stderr = proc.communicate(timeout=60)
    assert b"WORKER TIMEOUT" not in stderr and b"Traceback" not in stderr


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


def worker_threads(proc: subprocess.Popen) -> int:
    """The thread count of the one gunicorn worker under master `proc` (/proc/<pid>/status)."""
    (worker,) = psutil.Process(proc.pid).children()
    return int(re.search(r"^Threads:\s+(\d+)", Path(f"/proc/{worker.pid}/status").read_text(), re.M)[1])


def open_raw_stream(port: int) -> tuple[socket.socket, int, bytes]:
    """GET /api/stream on a raw socket; (socket, status, bytes so far) once the head, and for a 200 the
    first frame, is in."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(b"GET /api/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n")
    data = read_until(sock, b"\r\n\r\n")
    if data.startswith(b"HTTP/1.1 200"):
        data = read_until(sock, b"retry:", data)
    return sock, int(data.split()[1]), data


def read_until(sock: socket.socket, marker: bytes, data: bytes = b"") -> bytes:
    """`data` and what `sock` sends next, up to and with `marker`."""
    while marker not in data:
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    return data


def open_when_free(port: int) -> tuple[socket.socket, bytes]:
    """A new stream once the one place is free again; (socket, bytes so far). Fails if it never is."""

    def attempt() -> tuple[socket.socket, int, bytes]:
        sock, status, data = open_raw_stream(port)
        if status != 200:
            sock.close()  # 503: the dropped stream still holds the one place
        return sock, status, data

    sock, _, data = poll(attempt, lambda answer: answer[1] == 200, interval=0.02)[-1]
    return sock, data


def test_a_closed_stream_frees_its_place(orchestrator, tmp_path):
    """100 streams dropped (closed or reset, at once or after the snapshot): each place is free again (the
    next heartbeat finds the stream gone), the worker's thread count comes back to its baseline and a new
    stream is still served."""
    proc, port = start_server(tmp_path, orchestrator(), STREAM_MAX_CLIENTS="1", GUNICORN_THREADS="2",
                              STREAM_HEARTBEAT_SECONDS="2", STREAM_HEALTH_SECONDS="3600")
    try:
        held, status, _ = open_raw_stream(port)  # both threads of the pool in use: a stream and a REST call
        assert status == 200 and http_get(port, "/api/dashboard/overview") == 200
        held.close()
        baseline = None
        for cycle in range(101):
            sock, data = open_when_free(port)
            baseline = baseline or worker_threads(proc)
            if cycle == 100:
                break
            if cycle % 4 >= 2:  # dropped once the snapshot is in (it ends with a ping) and all is quiet
                read_until(sock, b": ping", data)
            if cycle % 2:  # an RST instead of a FIN
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
        read_until(sock, b"event: training", data)
        sock.close()
        assert abs(worker_threads(proc) - baseline) <= 1, (baseline, worker_threads(proc))
        assert http_get(port, "/api/status") == 200
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


def http_get(port: int, path: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    finally:
        conn.close()


class ReconnectingClient(threading.Thread):
    """An EventSource stand-in: reads a stream and, whenever it ends, waits `retry:` ms and connects again."""

    def __init__(self, port: int, stop: threading.Event):
        super().__init__(daemon=True)
        self.port, self.stop, self.retry = port, stop, 3.0
        self.snapshots: list[float] = []  # when each new stream's `training` snapshot came
        self.ends: list[float] = []  # when each stream ended
        self.errors: list[str] = []

    def run(self):
        while not self.stop.is_set():
            try:
                stream = EventStream(self.port)
                if stream.response.status != 200:
                    self.errors.append(f"status {stream.response.status}")
                for kind, data in stream.frames() if stream.response.status == 200 else ():
                    if kind == "retry":
                        self.retry = int(data) / 1000
                    elif kind == "training":
                        self.snapshots.append(time.monotonic())
                stream.close()
            except OSError as err:
                self.errors.append(repr(err))
            self.ends.append(time.monotonic())
            self.stop.wait(self.retry)

    def back_after(self, moment: float) -> float | None:
        """When the first snapshot after the first end of a stream after `moment` came, or None."""
        ended = next((t for t in self.ends if t > moment), None)
        return next((t for t in self.snapshots if ended is not None and t > ended), None)

    def streams_lost_after(self, moment: float) -> int:
        """How many streams ended after `moment` before the client was back (1: its first reconnect worked)."""
        back = self.back_after(moment)
        return sum(1 for t in self.ends if moment < t < back)


def test_a_graceful_restart_reconnects_every_stream_and_loses_no_request(orchestrator, tmp_path):
    """SIGHUP to gunicorn with 20 streams open: every client's first reconnect (after its `retry:` wait) gets
    a new stream, and REST calls made meanwhile all succeed."""
    proc, port = start_server(tmp_path, orchestrator(), GUNICORN_WORKERS="2", GUNICORN_THREADS="24",
                              STREAM_MAX_CLIENTS="20", STREAM_HEALTH_SECONDS="3600", LOG_LEVEL="WARNING")
    stop = threading.Event()
    clients = [ReconnectingClient(port, stop) for _ in range(20)]
    answers: list[tuple[float, object]] = []

    def call_rest():
        while not stop.is_set():  # until the restart is over and 10 answers came after the SIGHUP
            try:
                answers.append((time.monotonic(), http_get(port, "/api/status")))
            except OSError as err:  # refused or reset: a lost request
                answers.append((time.monotonic(), repr(err)))
            stop.wait(0.05)

    rest = threading.Thread(target=call_rest, daemon=True)
    try:
        for client in clients:
            client.start()
        poll(lambda: sum(bool(c.snapshots) for c in clients), lambda n: n == 20, interval=0.1)
        old_workers = {p.pid for p in psutil.Process(proc.pid).children()}
        rest.start()
        hup = time.monotonic()
        proc.send_signal(signal.SIGHUP)
        poll(lambda: [c.back_after(hup) for c in clients], lambda seen: None not in seen, 15, interval=0.1)
        # The old workers have exited by themselves, before gunicorn's graceful_timeout (20 s) would kill them.
        poll(lambda: {p.pid for p in psutil.Process(proc.pid).children()},
             lambda pids: len(pids) == 2 and not pids & old_workers, 15, interval=0.1)
        poll(lambda: sum(moment > hup for moment, _ in answers), lambda n: n >= 10, interval=0.1)
        stop.set()
        rest.join(timeout=15)
    finally:
        stop.set()
        proc.terminate()
        _, stderr = proc.communicate(timeout=30)
        for client in clients:
            client.join(timeout=15)
    assert b"Traceback" not in stderr and b"WORKER TIMEOUT" not in stderr
    assert [c.streams_lost_after(hup) for c in clients] == [1] * 20
    assert [c.errors for c in clients if c.errors] == []
    during = [status for moment, status in answers if moment > hup]
    assert len(during) >= 10 and set(during) == {200}, Counter(map(str, during))
