"""Cloud calls against hostile upstreams: one that trickles, one that answers far too much, one that hangs.

Real servers on 127.0.0.1: a scripted stub upstream of the test's own and a cloud-mode gunicorn in front
of it (test_cloud_resilience.cloud_server). The client's own timeout is many times the deadline, so a
call that ignored the deadline fails the test instead of passing slowly.
"""
from __future__ import annotations

import json
import threading

from conftest import poll
from test_cloud import AGENT_ROW, Reply, Stub, call
from test_cloud_resilience import STATUS, GatedStub, cloud_server, refused

DEADLINE = 2


def trickle(body: object, every: float) -> Reply:
    """A valid 200 whose body arrives one byte every `every` seconds."""
    payload = json.dumps(body).encode()
    return Reply(200, chunks=[(payload[i:i + 1], every) for i in range(len(payload))])


def test_a_trickling_upstream_is_a_504_at_the_deadline_and_counts_for_the_breaker(tmp_path):
    with Stub() as stub, cloud_server(tmp_path, stub.base, CLOUD_TIMEOUT_SECONDS=str(DEADLINE),
                                      CLOUD_BREAKER_FAILURES="2", CLOUD_BREAKER_RESET_SECONDS="3600") as b:
        stub.set("GET", STATUS, trickle([AGENT_ROW] * 3, every=0.5))  # about 5 minutes to send it all
        for _ in range(2):
            response = call("GET", b.base + STATUS)
            assert response.status_code == 504, response.text
            assert f"no complete answer to GET {STATUS} within {DEADLINE}s (CLOUD_TIMEOUT_SECONDS)" in \
                response.json()["error"]
        assert refused(call("GET", b.base + STATUS), 3600)  # the two late answers opened the breaker


def test_an_answer_over_the_size_cap_is_a_502_without_reading_it(tmp_path):
    chunk = b" " * (1 << 20)
    body = [(b"[", 0)] + [(chunk, 0)] * 60 + [(b"]", 0)]  # 60 MiB of valid JSON
    with Stub() as stub, cloud_server(tmp_path, stub.base, CLOUD_MAX_RESPONSE_BYTES=str(1 << 20)) as b:
        stub.set("GET", STATUS, Reply(200, chunks=body))
        response = call("GET", b.base + STATUS)
        assert response.status_code == 502
        assert f"larger than {1 << 20} bytes (CLOUD_MAX_RESPONSE_BYTES)" in response.json()["error"]
        assert len(stub.sent) < len(body)  # the proxy hung up: the rest was never sent


def test_calls_beyond_the_bound_are_refused_at_once_and_liveness_keeps_a_thread(tmp_path):
    stub = GatedStub()
    with stub, cloud_server(tmp_path, stub.base, CLOUD_MAX_CONCURRENT_CALLS="2", CLOUD_TIMEOUT_SECONDS="60",
                            GUNICORN_WORKERS="1", GUNICORN_THREADS="8") as b:
        stub.set("GET", STATUS, Reply(200, [AGENT_ROW]))
        stub.gate.clear()
        held: list = []
        callers = [threading.Thread(target=lambda: held.append(call("GET", b.base + STATUS))) for _ in range(2)]
        for caller in callers:
            caller.start()
        try:
            poll(lambda: stub.held, lambda n: n == 2)
            busy = call("GET", b.base + STATUS)
            assert busy.status_code == 503 and busy.headers["Retry-After"] == "1"
            assert "(CLOUD_MAX_CONCURRENT_CALLS)" in busy.json()["error"]
            assert call("GET", b.base + "/healthz").status_code == 200
        finally:
            stub.gate.set()
            for caller in callers:
                caller.join(30)
        assert [r.status_code for r in held] == [200, 200]
        assert stub.held == 2  # the refused call never reached the upstream


def test_a_call_given_up_at_the_deadline_frees_its_slot(tmp_path):
    with Stub() as stub, cloud_server(tmp_path, stub.base, CLOUD_TIMEOUT_SECONDS=str(DEADLINE),
                                      CLOUD_MAX_CONCURRENT_CALLS="1", CLOUD_BREAKER_FAILURES="0") as b:
        stub.set("GET", STATUS, trickle([AGENT_ROW] * 3, every=0.5))
        stub.set("GET", "/api/training/status", Reply(200, {"is_running": False}))
        assert call("GET", b.base + STATUS).status_code == 504
        # The trickle goes on for minutes; the call's thread stops reading it at the next byte after the deadline.
        poll(lambda: call("GET", b.base + "/api/training/status").status_code, lambda status: status != 503)
