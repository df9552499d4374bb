"""Cloud mode against an upstream that keeps failing: circuit breaker, connect timeout, pooled connections.

Real servers on 127.0.0.1, with the helpers of test_cloud.py: a scripted stub upstream (Stub) or a "blackhole"
port whose connect() never completes, and a cloud-mode gunicorn in front of it (1 worker unless said, no
caches, so every request is an upstream call).
"""
from __future__ import annotations

import logging
import re
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest

from dashboard.cloud import breaker as circuit_breaker
from dashboard.cloud import client as cloud_client
from dashboard.config import ConfigError, load_config
from dashboard.web.errors import ApiError
from conftest import poll
from test_cloud import AGENT_ROW, CANARY, Reply, Stub, call, cloud_app, start_gunicorn, stop, wait_ready

STATUS = "/api/agents/status"


def breaker(reset_seconds: int) -> dict:
    """Settings of a server whose breaker opens after 5 failed calls in a row, for `reset_seconds`."""
    return {"CLOUD_BREAKER_FAILURES": "5", "CLOUD_BREAKER_RESET_SECONDS": str(reset_seconds), "POST_RATE_LIMIT": "0"}


@contextmanager
def cloud_server(tmp: Path, upstream: str, **env: str):
    """A cloud-mode gunicorn in front of `upstream`; on exit, its logs must hold neither the key nor a crash."""
    settings = {"ENVIRONMENT": "cloud", "CLOUD_API_URL": upstream, "CLOUD_API_KEY": CANARY,
                "CLOUD_ALLOW_ANONYMOUS_WRITES": "true",
                "CLOUD_ALLOW_INSECURE_HTTP": "true", "CLOUD_TIMEOUT_SECONDS": "5", "CLOUD_CACHE_SECONDS": "0",
                "RESPONSE_CACHE_SECONDS": "0", "ORCHESTRATOR_PATH": str(tmp / "absent"), **env}
    server = start_gunicorn(tmp, "B", **settings)
    try:
        wait_ready(server)
        assert call("GET", server.base + "/healthz").status_code == 200  # a worker has booted: time only requests
        yield server
    finally:
        stop(server)
    logs = server.logs()
    assert CANARY not in logs and "unhandled error" not in logs


def refused(response, reset_seconds: int) -> bool:
    """Whether an answer is the open breaker's: 503 JSON with a Retry-After of 1..reset_seconds."""
    return (response.status_code == 503 and "circuit breaker open" in response.json()["error"]
            and 1 <= int(response.headers["Retry-After"]) <= reset_seconds)


# A new connection per call: gunicorn keeps a kept-alive connection on one worker, a new one goes to either.
FRESH = {"Connection": "close"}


def trip(server, stub: Stub, headers: dict | None = None) -> None:
    """Make the breaker of `server` open: 5 upstream failures in a row."""
    stub.set("GET", STATUS, Reply(500, {"error": "down"}))
    assert [call("GET", server.base + STATUS, headers=headers).status_code for _ in range(5)] == [502] * 5
    assert stub.count("GET", STATUS) == 5


def until_probe(server, reset_seconds: int, headers: dict | None = None) -> list:
    """Call until the breaker lets a call through (the probe); every answer, the probe's last."""
    answers = poll(lambda: call("GET", server.base + STATUS, headers=headers),
                   lambda r: not refused(r, reset_seconds), interval=0.1)
    assert all(refused(r, reset_seconds) for r in answers[:-1])
    return answers


def refusing_workers(server, since: int = 0) -> set[str]:
    """The pids of the workers that logged a 503 to GET STATUS (in the app's log file, from byte `since`)."""
    text = server.log_path.read_bytes()[since:].decode(errors="replace") if server.log_path.exists() else ""
    return set(re.findall(rf"\[(\d+)\] dashboard: GET {STATUS} 503 ", text))


def refused_on_both_workers(server, reset_seconds: int, since: int = 0) -> list:
    """Call over new connections until both workers have answered a refusal; every answer (all refusals)."""
    seen = poll(lambda: (call("GET", server.base + STATUS, headers=FRESH), refusing_workers(server, since)),
                lambda answer: len(answer[1]) == 2, deadline_seconds=20)
    assert all(refused(response, reset_seconds) for response, _ in seen)
    return seen


class GatedStub(Stub):
    """A Stub that, while its gate is closed, holds each request before answering it (and counts them held)."""

    def __init__(self):
        super().__init__()
        self.gate = threading.Event()
        self.gate.set()
        self.held = 0

    def serve(self, handler) -> None:
        if not self.gate.is_set():
            with self.lock:
                self.held += 1
            assert self.gate.wait(60), "the test never opened the gate"
        super().serve(handler)


# --- the circuit breaker (plan T14) ---

def test_an_open_breaker_answers_every_call_at_once_without_calling_the_upstream(tmp_path):
    reset = 3600  # the longest allowed: none of the 100 calls can come after it and be a probe
    with Stub() as stub, cloud_server(tmp_path, stub.base, **breaker(reset)) as b:
        trip(b, stub)
        stub.set("GET", STATUS, Reply(200, [AGENT_ROW], delay=0.5))
        stub.set("GET", "/api/logs/export", Reply(200, b"", delay=0.5))
        stub.set("POST", "/api/storyboard/project/create", Reply(201, {}, delay=0.5))
        kinds = [("GET", STATUS, None), ("GET", "/api/logs/export?format=csv", None),
                 ("POST", "/api/storyboard/project/create", {"name": "x"})]
        answers = [call(method, b.base + path, json=body) for method, path, body in (kinds * 34)[:100]]
        assert all(refused(r, reset) for r in answers) and stub.hits == []
    assert "circuit breaker open after 5 failed calls in a row" in b.logs()


def test_after_the_reset_one_probe_goes_through_and_decides(tmp_path):
    reset = 3  # the call right after a failed probe must come within it
    # A held probe waits for the test, not for CLOUD_TIMEOUT_SECONDS; it takes the worker's one upstream slot,
    # so the calls made meanwhile must be refused by the open breaker, not as "upstream busy".
    with GatedStub() as stub, cloud_server(tmp_path, stub.base, CLOUD_TIMEOUT_SECONDS="30",
                                           CLOUD_MAX_CONCURRENT_CALLS="1", **breaker(reset)) as b:
        trip(b, stub)
        stub.set("GET", STATUS, Reply(500, {"error": "still down"}))
        assert until_probe(b, reset)[-1].status_code == 502  # the probe fails: open again
        last = call("GET", b.base + STATUS)
        assert refused(last, reset) and stub.count("GET", STATUS) == 1

        stub.set("GET", STATUS, Reply(200, [AGENT_ROW]))
        stub.gate.clear()  # the next probe is held at the upstream until the others have been answered
        with ThreadPoolExecutor(1) as background:
            probe = background.submit(until_probe, b, reset)
            poll(lambda: stub.held, lambda held: held == 1)
            with ThreadPoolExecutor(7) as pool:
                others = list(pool.map(lambda _: call("GET", b.base + STATUS), range(7)))
            stub.gate.set()
            assert probe.result()[-1].json() == [AGENT_ROW]
        # refused while the probe was in flight
        assert all(refused(r, reset) for r in others), [(r.status_code, r.headers.get("Retry-After"), r.text[:200])
                                                        for r in others]
        assert stub.count("GET", STATUS) == 1
        assert call("GET", b.base + STATUS).json() == [AGENT_ROW]  # closed: calls go through again
        assert stub.count("GET", STATUS) == 2
    logs = b.logs()
    assert "the probe call failed; circuit breaker open again" in logs
    assert "answered the probe call: circuit breaker closed" in logs


def test_answers_that_show_the_upstream_is_reachable_do_not_count_as_failures(tmp_path, monkeypatch):
    """A 4xx, 401, invalid JSON, a wrong shape or a redirect ends a run of failures; a 5xx or 429 adds to it."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    down = (Reply(500, {"error": "down"}), 502)
    steps = [down, (Reply(404, {"error": "no such agent"}), 404), down, (Reply(401, {"error": "bad key"}), 502),
             down, (Reply(200, b"{not json"), 502), down, (Reply(200, [{"id": "agent_1"}]), 502),
             down, (Reply(302, b"", {"Location": "http://127.0.0.1:9/"}), 502),
             down, (Reply(429, headers={"Retry-After": "30"}), 502)]  # the 2nd failure in a row: open
    with Stub() as stub:
        app = cloud_app(tmp_path, CLOUD_API_URL=stub.base, CLOUD_CACHE_SECONDS=0, CLOUD_BREAKER_FAILURES=2,
                        RESPONSE_CACHE_SECONDS=0)
        client = app.test_client()
        try:
            stub.set("GET", STATUS, *[reply for reply, _ in steps])
            assert [client.get(STATUS).status_code for _ in steps] == [status for _, status in steps]
            refusal = client.get(STATUS)
            assert refusal.status_code == 503 and int(refusal.headers["Retry-After"]) in range(1, 31)
            assert stub.count("GET", STATUS) == len(steps)
        finally:
            app.extensions["provider"].client.close()


def test_failures_spread_over_the_workers_open_the_breaker_of_every_worker(tmp_path):
    """Issue 14: 5 failures in a row, wherever they fell, open the breaker of the instance. Split over 2
    workers, one of them saw at most 2 of the 5: that it refuses too shows the count is shared."""
    reset = 3600
    with Stub() as stub, cloud_server(tmp_path, stub.base, GUNICORN_WORKERS="2", **breaker(reset)) as b:
        trip(b, stub, headers=FRESH)
        refused_on_both_workers(b, reset)
        assert stub.count("GET", STATUS) == 5  # no worker called the upstream again
    assert "circuit breaker open after 5 failed calls in a row" in b.logs()


def test_after_the_reset_exactly_one_call_of_the_instance_is_the_probe(tmp_path):
    reset = 3
    with GatedStub() as stub, cloud_server(tmp_path, stub.base, GUNICORN_WORKERS="2", CLOUD_TIMEOUT_SECONDS="60",
                                           **breaker(reset)) as b:
        trip(b, stub, headers=FRESH)
        stub.set("GET", STATUS, Reply(200, [AGENT_ROW]))
        stub.gate.clear()  # the probe is held at the upstream while both workers are asked
        with ThreadPoolExecutor(1) as background:
            probe = background.submit(until_probe, b, reset, FRESH)
            poll(lambda: stub.held, lambda held: held == 1)
            refused_on_both_workers(b, reset, since=b.log_path.stat().st_size)
            stub.gate.set()
            assert probe.result()[-1].json() == [AGENT_ROW]
        assert stub.count("GET", STATUS) == 1
        assert all(call("GET", b.base + STATUS, headers=FRESH).status_code == 200 for _ in range(4))  # closed


def test_a_probe_that_never_reports_gives_its_place_to_the_next_caller(tmp_path, caplog):
    """Two breakers on one state file, as two workers: the first takes the probe and dies with it."""
    path = str(tmp_path / "db.sqlite.breaker")
    dead, alive = (circuit_breaker.CircuitBreaker(2, 0.1, path, probe_seconds=5) for _ in range(2))
    dead.record(answered=False, probe=False)
    alive.record(answered=False, probe=False)  # 2 in a row, over both: open for both
    assert poll(lambda: admitted(dead), lambda probe: probe is not None)[-1] is True  # the probe, never reported
    with caplog.at_level(logging.WARNING, logger="dashboard.cloud.client"):
        assert admitted(alive) is None  # the probe is still under way
        assert poll(lambda: admitted(alive), lambda probe: probe is not None)[-1] is True
        alive.record(answered=True, probe=True)
    assert "the previous probe call never reported" in caplog.text
    assert dead.admit() is False and alive.admit() is False  # closed for both


def admitted(breaker: circuit_breaker.CircuitBreaker):
    """True for the probe, False for an ordinary call, None when refused."""
    try:
        return breaker.admit()
    except ApiError:
        return None


def test_an_unusable_state_file_leaves_each_worker_its_own_breaker(tmp_path, caplog):
    missing = circuit_breaker.CircuitBreaker(2, 3600, str(tmp_path / "gone" / "db.sqlite.breaker"))
    garbled_path = tmp_path / "garbled.breaker"
    garbled_path.write_bytes(b"\x00not json")
    garbled = circuit_breaker.CircuitBreaker(2, 3600, str(garbled_path))
    with caplog.at_level(logging.WARNING, logger="dashboard.cloud.client"):
        for breaker in (missing, garbled):
            assert breaker.admit() is False
            breaker.record(answered=False, probe=False)
            breaker.record(answered=False, probe=False)
            assert admitted(breaker) is None  # it still opens
    assert caplog.text.count("unusable (FileNotFoundError); this worker counts on its own") == 1
    assert "held no valid state: starting closed" in caplog.text
    assert b'"streak": 2' in garbled_path.read_bytes()  # rewritten: shared again


def test_a_breaker_with_0_failures_never_opens():
    breaker = circuit_breaker.CircuitBreaker(0, 30)
    for _ in range(100):
        assert breaker.admit() is False
        breaker.record(answered=False, probe=False)


# --- connect timeout (plan T10) ---

@contextmanager
def blackhole():
    """A port on 127.0.0.1 whose connect() hangs: its listener (backlog 0) never accepts, and once its accept
    queue is full the kernel drops every further SYN. Checked before it is handed out."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port, queued = listener.getsockname()[1], []
    try:
        for _ in range(8):
            sock = socket.socket()
            sock.settimeout(0.3)
            try:
                sock.connect(("127.0.0.1", port))
            except socket.timeout:
                sock.close()
                break
            queued.append(sock)
        else:
            pytest.fail("connect() to a full accept queue does not hang on this machine: no blackhole")
        yield port
    finally:
        for sock in queued:
            sock.close()
        listener.close()


def connect_retries(server) -> int:
    """How many upstream attempts of `server` were retried after a connect timeout (urllib3 logs each)."""
    # A set: the log file and the console output hold the same lines (each has its own millisecond).
    return len({line for line in server.logs().splitlines() if "Retrying" in line and "ConnectTimeoutError" in line})


def test_an_upstream_that_never_accepts_is_a_504_within_the_connect_budget(tmp_path):
    """The budget is the connect timeout per try: 4 tries for a GET, 1 for a POST. The read timeout is longer
    than the test's own 30 s wait, so only the connect timeout can have ended the tries."""
    connect = 0.5
    with blackhole() as port, cloud_server(tmp_path, f"http://127.0.0.1:{port}", CLOUD_TIMEOUT_SECONDS="300",
                                           CLOUD_CONNECT_TIMEOUT_SECONDS=str(connect)) as b:
        for method, path, tries in (("GET", STATUS, cloud_client.RETRIES + 1), ("POST", "/api/training/stop", 1)):
            retried = connect_retries(b)
            response = call(method, b.base + path)
            assert response.status_code == 504 and response.json()["status"] == 504
            tried = f"{tries} tries" if tries > 1 else "one try"
            assert (f"could not connect for {method} {path} within {connect:g}s (CLOUD_CONNECT_TIMEOUT_SECONDS), "
                    f"{tried}") in response.json()["error"]
            assert connect_retries(b) - retried == tries - 1, method


# --- pooled connections (plan T16) ---

def test_sequential_proxied_gets_reuse_pooled_upstream_connections(tmp_path):
    workers, threads = 2, 8
    with Stub() as stub, cloud_server(tmp_path, stub.base, GUNICORN_WORKERS=str(workers),
                                      GUNICORN_THREADS=str(threads)) as b:
        stub.set("GET", STATUS, Reply(200, [AGENT_ROW]))
        assert all(call("GET", b.base + STATUS).status_code == 200 for _ in range(200))
        assert stub.count("GET", STATUS) == 200
        assert stub.server.accepts <= workers * threads  # at most one connection per worker thread


# --- settings ---

@pytest.mark.parametrize("name,value", [
    ("CLOUD_BREAKER_FAILURES", "-1"), ("CLOUD_BREAKER_FAILURES", "2.5"), ("CLOUD_BREAKER_FAILURES", "many"),
    ("CLOUD_BREAKER_RESET_SECONDS", "0"), ("CLOUD_BREAKER_RESET_SECONDS", "soon"),
    ("CLOUD_CONNECT_TIMEOUT_SECONDS", "0"), ("CLOUD_CONNECT_TIMEOUT_SECONDS", "61"),
])
def test_bad_breaker_and_connect_settings_stop_the_start(name, value):
    with pytest.raises(ConfigError, match=name):
        load_config({name: value})


def test_gunicorn_does_not_start_with_a_bad_breaker_setting(tmp_path):
    server = start_gunicorn(tmp_path, "bad", CLOUD_BREAKER_FAILURES="-1")
    try:
        assert server.proc.wait(timeout=30) != 0
    finally:
        stop(server)
    assert "CLOUD_BREAKER_FAILURES must be between 0 and 1000" in server.output.read_text()
