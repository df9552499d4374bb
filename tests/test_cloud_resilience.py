"""Cloud mode against an upstream that keeps failing: circuit breaker, connect timeout, pooled connections.

Real servers on 127.0.0.1, with the helpers of test_cloud.py: a scripted stub upstream (Stub) or a "blackhole"
port whose connect() never completes, and a cloud-mode gunicorn in front of it (1 worker unless said, no
caches, so every request is an upstream call).
"""
from __future__ import annotations

import socket
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest

import cloud_client
from config import ConfigError, load_config
from test_cloud import AGENT_ROW, CANARY, Reply, Stub, call, cloud_app, start_gunicorn, stop, timed, wait_ready

STATUS = "/api/agents/status"


def breaker(reset_seconds: int) -> dict:
    """Settings of a server whose breaker opens after 5 failed calls in a row, for `reset_seconds`."""
    return {"CLOUD_BREAKER_FAILURES": "5", "CLOUD_BREAKER_RESET_SECONDS": str(reset_seconds), "POST_RATE_LIMIT": "0"}


@contextmanager
def cloud_server(tmp: Path, upstream: str, **env: str):
    """A cloud-mode gunicorn in front of `upstream`; on exit, its logs must hold neither the key nor a crash."""
    settings = {"ENVIRONMENT": "cloud", "CLOUD_API_URL": upstream, "CLOUD_API_KEY": CANARY,
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


def trip(server, stub: Stub) -> None:
    """Make the breaker of `server` open: 5 upstream failures in a row."""
    stub.set("GET", STATUS, Reply(500, {"error": "down"}))
    assert [call("GET", server.base + STATUS).status_code for _ in range(5)] == [502] * 5
    assert stub.count("GET", STATUS) == 5


def wait_out(response) -> None:
    """Sleep for the Retry-After of an open breaker's answer (seconds, rounded up: the reset has passed then)."""
    time.sleep(int(response.headers["Retry-After"]))


# --- T14: the circuit breaker ---

def test_an_open_breaker_answers_every_call_at_once_without_calling_the_upstream(tmp_path):
    reset = 10  # the 100 calls must fit in it, however busy the machine
    with Stub() as stub, cloud_server(tmp_path, stub.base, **breaker(reset)) as b:
        trip(b, stub)
        stub.set("GET", STATUS, Reply(200, [AGENT_ROW], delay=0.5))
        stub.set("GET", "/api/logs/export", Reply(200, b"", delay=0.5))
        stub.set("POST", "/api/storyboard/project/create", Reply(201, {}, delay=0.5))
        kinds = [("GET", STATUS, None), ("GET", "/api/logs/export?format=csv", None),
                 ("POST", "/api/storyboard/project/create", {"name": "x"})]
        started = time.monotonic()
        answers = [call(method, b.base + path, json=body) for method, path, body in (kinds * 34)[:100]]
        assert time.monotonic() - started < reset  # 100 calls; each upstream call would cost 0.5 s
        assert all(refused(r, reset) for r in answers) and stub.hits == []
    assert "circuit breaker open after 5 failed calls in a row" in b.logs()


def test_after_the_reset_one_probe_goes_through_and_decides(tmp_path):
    reset = 2
    with Stub() as stub, cloud_server(tmp_path, stub.base, **breaker(reset)) as b:
        trip(b, stub)
        wait_out(call("GET", b.base + STATUS))
        stub.set("GET", STATUS, Reply(500, {"error": "still down"}))
        assert call("GET", b.base + STATUS).status_code == 502  # the probe fails: open again
        last = call("GET", b.base + STATUS)
        assert refused(last, reset) and stub.count("GET", STATUS) == 1

        wait_out(last)
        stub.set("GET", STATUS, Reply(200, [AGENT_ROW], delay=2.5))  # the probe is in flight for 2.5 s
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda _: call("GET", b.base + STATUS), range(8)))
        assert sorted(r.status_code for r in answers) == [200] + [503] * 7
        assert all(refused(r, reset) for r in answers if r.status_code == 503)
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


def test_a_breaker_with_0_failures_never_opens():
    breaker = cloud_client.CircuitBreaker(0, 30)
    for _ in range(100):
        assert breaker.admit() is False
        breaker.record(answered=False, probe=False)


# --- T10: connect timeout ---

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


def test_an_upstream_that_never_accepts_is_a_504_within_the_connect_budget(tmp_path):
    connect = 0.5
    backoff = sum(cloud_client.BACKOFF_FACTOR * 2 ** n for n in range(1, cloud_client.RETRIES))  # first one: 0
    with blackhole() as port, cloud_server(tmp_path, f"http://127.0.0.1:{port}",
                                           CLOUD_CONNECT_TIMEOUT_SECONDS=str(connect)) as b:
        for method, path, budget in (("GET", STATUS, connect * (cloud_client.RETRIES + 1) + backoff),
                                     ("POST", "/api/training/stop", connect)):
            response, elapsed = timed(method, b.base + path)
            assert response.status_code == 504 and response.json()["status"] == 504
            assert "could not connect" in response.json()["error"] and "CLOUD_CONNECT_TIMEOUT_SECONDS" in response.text
            assert elapsed < budget + 1, (method, elapsed)


# --- T16: pooled connections ---

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
