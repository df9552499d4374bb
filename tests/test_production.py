"""Production behaviour: probes, Prometheus across workers, ETag, security headers, rate and body limits."""
from __future__ import annotations

import json
import re
import socket
import sqlite3
import threading
import time
from collections import Counter
from contextlib import closing
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from dashboard.web import hardening
from dashboard.web import response_cache
from dashboard.config import load_config
from conftest import get_route_urls, poll
from servers import Gunicorn

SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer",
                    "Cross-Origin-Opener-Policy": "same-origin"}


def get_urls(app) -> list[str]:
    """Every GET route of the app, with real ids filled in (the stream excluded: it never ends)."""
    fill = {"agent_id": "agent_1", "metric_name": "system_overall_quality", "project_id": "none", "session_id": "1",
            "run_id": "none"}
    return sorted(get_route_urls(app, fill))


def closed(response):
    response.close()
    return response


def freeze_rate_clock(monkeypatch) -> None:
    """Stop the rate limiter's clock mid-minute: POSTs in this process all fall in one rate window."""
    monkeypatch.setattr(hardening, "time", SimpleNamespace(time=lambda: 1_800_000_030.0))


class StepClock:
    """Stands in for response_cache's `time`: monotonic() moves only when the test calls advance()."""

    def __init__(self):
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def perf_counter(self) -> float:
        return time.perf_counter()

    def advance(self, seconds: float) -> None:
        self.now += seconds


def test_every_answer_carries_the_security_headers(app, client, make_app, orchestrator, tmp_path, monkeypatch):
    freeze_rate_clock(monkeypatch)  # the 201 and the 429 below are the first and second POST of one window
    urls = get_urls(app) + ["/static/js/dashboard.js", "/api/nope", "/api/agents/bad%20id",
                            "/api/metrics/quality?days=0"]
    # Closed at once: a streamed body (the event stream never ends) is not read, its headers are checked.
    answers = [(url, closed(client.get(url))) for url in urls + ["/api/stream"]]
    etag = dict(answers)["/api/agents/status"].headers["ETag"]
    answers.append(("304", client.get("/api/agents/status", headers={"If-None-Match": etag})))
    answers.append(("POST /api/storyboard/project/create", client.post("/api/storyboard/project/create", json={})))
    answers.append(("POST /api/training/start", client.post("/api/training/start", data="x")))
    answers.append(("DELETE /api/status", client.delete("/api/status")))
    answers.append(("413", client.post("/api/storyboard/project/create", data=b"x" * (2 << 20),
                                       content_type="application/json")))
    # 401, 429, 500 and 503 from an app with an API key, a rate limit of two POSTs and no room for streams.
    strict = make_app(orchestrator(), API_KEY="k" * 32, POST_RATE_LIMIT=2, STREAM_MAX_CLIENTS=0,
                      DATABASE_PATH=tmp_path / "strict.sqlite")
    strict.get("/api/_boom")(lambda: 1 / 0)
    other, key = strict.test_client(), {"Authorization": "Bearer " + "k" * 32}
    answers += [("401", other.post("/api/storyboard/project/create", json={"name": "a"})),
                ("201", other.post("/api/storyboard/project/create", json={"name": "a"}, headers=key)),
                ("429", other.post("/api/storyboard/project/create", json={"name": "a"}, headers=key)),
                ("500", other.get("/api/_boom")), ("503", other.get("/api/stream"))]
    statuses = {response.status_code for _, response in answers}
    assert len(answers) >= 40 and {200, 201, 304, 400, 401, 404, 405, 413, 415, 429, 500, 503} <= statuses
    for url, response in answers:
        for header, value in SECURITY_HEADERS.items():
            assert response.headers.get(header) == value, (url, header)
        assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"], url
        cache = response.headers.get("Cache-Control", "")
        assert "no-store" in cache or "no-cache" in cache, url
        assert "Werkzeug" not in response.headers.get("Server", ""), url
    errors = [r for _, r in answers if r.status_code >= 400]
    assert errors and all(r.headers["Cache-Control"] == "no-store" for r in errors)


def test_unchanged_json_answers_304_and_changed_data_a_new_etag(client):
    first = client.get("/api/agents/status")
    etag = first.headers["ETag"]
    again = client.get("/api/agents/status", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.data == b"" and again.headers["ETag"] == etag
    client.post("/api/storyboard/project/create", json={"name": "a"})
    projects = client.get("/api/storyboard/projects", headers={"If-None-Match": etag})
    assert projects.status_code == 200 and projects.headers["ETag"] != etag
    fresh = client.get("/api/storyboard/projects", headers={"If-None-Match": projects.headers["ETag"]})
    assert fresh.status_code == 304


def test_liveness_and_readiness(make_app, orchestrator, tmp_path):
    client = make_app(orchestrator()).test_client()
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.get_json()["checks"] == {"database": "ok", "data_source": "ok"}

    blocker = tmp_path / "file"
    blocker.write_text("")
    broken = make_app(orchestrator(), DATABASE_PATH=blocker / "db.sqlite").test_client()
    answer = broken.get("/readyz")
    assert answer.status_code == 503 and answer.get_json()["checks"]["database"].startswith("not writable")
    assert broken.get("/healthz").status_code == 200

    missing = make_app(tmp_path / "no-orchestrator").test_client().get("/readyz")
    assert missing.status_code == 503 and "unreadable" in missing.get_json()["checks"]["data_source"]


def scrape(server: Gunicorn) -> dict:
    status, _, body = server.request("GET", "/metrics")
    assert status == 200
    samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


# At most two connections per worker: a burst of concurrent requests reaches every worker, not just the
# first one awake (gunicorn's own option, after gunicorn.conf.py).
SPREAD = {"GUNICORN_CMD_ARGS": "--worker-connections 2"}


def serving_pids(server: Gunicorn, request_line: str) -> set[str]:
    """The pids of the workers whose request log lines contain `request_line`."""
    return {line.split("[")[1].split("]")[0] for line in server.log_path.read_text().splitlines()
            if request_line in line}


def wait_for_workers(server: Gunicorn, count: int) -> None:
    """Return once `count` workers answer (the port opens before the workers have loaded the app)."""

    def burst() -> set[str]:
        threads = [threading.Thread(target=server.request, args=("GET", "/healthz")) for _ in range(2 * count)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return serving_pids(server, "GET /healthz")

    poll(burst, lambda pids: len(pids) == count, interval=0.2)


def newest_score(root: Path, agent_id: str) -> float:
    """The newest quality score of `agent_id` in the orchestrator's metrics file."""
    return json.loads((root / "logs" / "training_metrics.json").read_text())[f"{agent_id}_quality"][-1]["score"]


def test_prometheus_metrics_are_summed_across_two_workers(orchestrator, tmp_path):
    root = orchestrator()
    # Uncached, so each request costs enough that both workers take some.
    with Gunicorn(root, tmp_path / "srv", GUNICORN_WORKERS="2", GUNICORN_THREADS="2",
                  RESPONSE_CACHE_SECONDS="0", **SPREAD) as server:
        wait_for_workers(server, 2)
        requests = 60
        threads = [threading.Thread(target=lambda: [server.request("GET", "/api/agents/status")
                                                     for _ in range(requests // 6)]) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        samples = scrape(server)
    key = ("dashboard_http_requests_total", (("endpoint", "/api/agents/status"), ("method", "GET"), ("status", "200")))
    assert samples[key] == requests
    count = ("dashboard_http_request_duration_seconds_count", (("endpoint", "/api/agents/status"), ("method", "GET")))
    assert samples[count] == requests
    assert len(serving_pids(server, "GET /api/agents/status 200")) == 2, "both workers should have served some"
    assert samples[("dashboard_training_running", ())] == 0
    assert samples[("dashboard_agent_quality_score", (("agent", "agent_2"),))] == newest_score(root, "agent_2")
    assert 0 <= samples[("dashboard_host_memory_percent", ())] <= 100
    assert samples[("dashboard_training_last_result", (("status", "completed"),))] == 1


def posts_per_window(db: Path, path: str) -> list[int]:
    """The rate limiter's count of POSTs to `path` in each minute window it keeps, oldest first."""
    with closing(sqlite3.connect(db)) as conn:
        return [n for (n,) in conn.execute("SELECT count FROM rate_limits WHERE key LIKE ? ORDER BY window",
                                           (f"%|{path}",))]


def test_post_rate_limit_holds_across_four_workers(orchestrator, tmp_path):
    create, limit = "/api/storyboard/project/create", 10
    with Gunicorn(orchestrator(), tmp_path / "srv", GUNICORN_WORKERS="4", GUNICORN_THREADS="4",
                  POST_RATE_LIMIT=str(limit), **SPREAD) as server:
        wait_for_workers(server, 4)
        answers: list[tuple[int, dict, bytes]] = []

        def post_some():
            for _ in range(10):
                answers.append(server.request("POST", create, {"name": "burst"}))

        threads = [threading.Thread(target=post_some) for _ in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        status, projects = server.get_json("/api/storyboard/projects")
        more = server.request("POST", create, {"name": "one more"})
    # The windows are the wall clock's minutes, and the burst may straddle two: whichever windows the
    # limiter counted the 101 POSTs in, each admitted exactly `limit` of them (or all, if fewer).
    counts = posts_per_window(tmp_path / "srv" / "db.sqlite", create)
    assert sum(counts) == len(answers) + 1 == 101
    admitted = sum(min(n, limit) for n in counts)
    assert Counter(status for status, _, _ in answers + [more]) == {201: admitted, 429: 101 - admitted}
    assert len(projects) == sum(status == 201 for status, _, _ in answers)
    for status, headers, body in answers + [more]:
        if status == 429:
            error = json.loads(body)
            assert 0 < int(headers["Retry-After"]) <= 60 and error["status"] == 429
            assert f"at most {limit} POSTs per minute" in error["error"]
    # The burst was spread over the workers, so a limit counted per worker would have let more through.
    assert len(serving_pids(server, f"POST {create}")) >= 3


def raw_post(port: int, head: bytes, chunks: list[bytes]) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        sock.sendall(head)
        try:
            for chunk in chunks:
                sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may answer and close before the whole body is sent
        answer = b""
        while True:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                break
            answer += data
    return answer


@pytest.mark.parametrize("chunked", [False, True])
def test_oversized_bodies_get_413_json_with_or_without_content_length(orchestrator, tmp_path, chunked):
    with Gunicorn(orchestrator(), tmp_path / "srv", MAX_CONTENT_LENGTH=str(1 << 20)) as server:
        body = b'{"name": "' + b"x" * (2 << 20) + b'"}'
        if chunked:
            head = (b"POST /api/storyboard/project/create HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
            pieces = [body[i:i + 65536] for i in range(0, len(body), 65536)]
            chunks = [b"%x\r\n%s\r\n" % (len(p), p) for p in pieces] + [b"0\r\n\r\n"]
        else:
            head = (b"POST /api/storyboard/project/create HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body))
            chunks = [body]
        answer = raw_post(server.port, head, chunks)
        status, projects = server.get_json("/api/storyboard/projects")
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b'"status":413' in answer and b"request body too large" in answer
    assert projects == []


def test_a_crash_is_a_500_json_without_a_trace_and_debug_is_off(make_app, orchestrator):
    app = make_app(orchestrator())

    @app.get("/api/_boom")
    def boom():
        raise RuntimeError("secret internals")

    response = app.test_client().get("/api/_boom")
    assert response.status_code == 500 and response.get_json() == {
        "error": "internal server error; the server log has the details", "status": 500}
    text = response.get_data(as_text=True)
    assert "Traceback" not in text and "secret internals" not in text and "Werkzeug Debugger" not in text
    assert app.debug is False and load_config({})["DEBUG"] is False


def test_dependency_floors_with_known_fixes_are_installed():
    floors = {"werkzeug": (3, 1, 6), "flask-cors": (6, 0, 1), "requests": (2, 33), "urllib3": (2, 5)}
    for package, floor in floors.items():
        installed = tuple(int(p) for p in re.findall(r"\d+", metadata.version(package))[:len(floor)])
        assert installed >= floor, (package, metadata.version(package))


def test_polled_answers_are_cached_briefly_and_a_post_clears_its_areas(make_app, orchestrator, monkeypatch):
    clock = StepClock()
    monkeypatch.setattr(response_cache, "time", clock)
    root = orchestrator()
    client = make_app(root, RESPONSE_CACHE_SECONDS=0.5).test_client()
    first = client.get("/api/dashboard/overview").get_json()
    projects = client.get("/api/storyboard/projects").get_json()
    path = root / "holistic_training_result.json"
    result = json.loads(path.read_text())
    result["agents_trained"] = 99
    path.write_text(json.dumps(result))
    assert client.get("/api/dashboard/overview").get_json() == first  # served again within the TTL
    client.post("/api/storyboard/project/create", json={"name": "clears the storyboard answers"})
    assert len(client.get("/api/storyboard/projects").get_json()) == len(projects) + 1
    assert client.get("/api/dashboard/overview").get_json() == first  # another area: still cached
    assert client.post("/api/training/stop", json={}).status_code == 409
    assert client.get("/api/dashboard/overview").get_json()["agents_trained"] == 99  # training touches it
    result["agents_trained"] = 98
    path.write_text(json.dumps(result))
    clock.advance(0.3)
    assert client.get("/api/dashboard/overview").get_json()["agents_trained"] == 99  # not yet expired
    clock.advance(0.3)
    assert client.get("/api/dashboard/overview").get_json()["agents_trained"] == 98  # expired
    # Errors are never cached, and cached answers still revalidate with their ETag.
    assert client.get("/api/agents/nope").status_code == 404
    etag = client.get("/api/dashboard/overview").headers["ETag"]
    assert client.get("/api/dashboard/overview", headers={"If-None-Match": etag}).status_code == 304


def test_a_polled_answer_is_recomputed_before_it_expires_without_a_poller_waiting(make_app, orchestrator,
                                                                                   monkeypatch):
    clock = StepClock()
    monkeypatch.setattr(response_cache, "time", clock)
    root = orchestrator()
    app = make_app(root, RESPONSE_CACHE_SECONDS=1)
    client, cache = app.test_client(), app.extensions["response_cache"]
    path = root / "holistic_training_result.json"
    result = json.loads(path.read_text())

    def trained(value=None):
        if value is not None:
            result["agents_trained"] = value
            path.write_text(json.dumps(result))
        return client.get("/api/dashboard/overview").get_json()["agents_trained"]

    def kept():
        answer = cache.get(("/api/dashboard/overview", (), ""))
        return json.loads(answer.body)["agents_trained"]
    first = trained()
    clock.advance(0.5)
    assert trained(97) == first  # early in its life: served as it is
    clock.advance(0.3)
    assert trained() == first  # its last quarter: still served as it is, and recomputed meanwhile
    poll(kept, lambda value: value == 97)  # the background recomputation
    clock.advance(0.5)  # past the first answer's expiry, within the recomputed one's
    assert trained(96) == 97  # the recomputed answer, served without computing
    clock.advance(1.1)  # nobody asked in the last quarter: expired, computed on the request
    assert trained() == 96


def test_cached_answers_keep_each_origins_cors_headers_and_revalidate(make_app, orchestrator):
    app = make_app(orchestrator(), RESPONSE_CACHE_SECONDS=60,
                   CORS_ORIGINS=["http://localhost:3000", "http://localhost:5173"])
    client = app.test_client()
    for _ in range(2):  # the second round is served from the cache
        for origin in ("http://localhost:3000", "http://localhost:5173"):
            response = client.get("/api/agents/status", headers={"Origin": origin})
            assert response.status_code == 200 and response.headers["Access-Control-Allow-Origin"] == origin
            assert response.headers["X-Content-Type-Options"] == "nosniff"
        evil = client.get("/api/agents/status", headers={"Origin": "https://evil.example"})
        assert "Access-Control-Allow-Origin" not in evil.headers
    etag = client.get("/api/agents/status").headers["ETag"]
    not_modified = client.get("/api/agents/status", headers={"If-None-Match": etag})
    assert not_modified.status_code == 304 and not_modified.data == b"" and not_modified.headers["ETag"] == etag
    assert "Content-Type" not in not_modified.headers and not_modified.headers["Cache-Control"] == "no-cache, private"
    other = client.get("/api/agents/status", headers={"If-None-Match": '"something-else"'})
    assert other.status_code == 200 and other.get_json() == client.get("/api/agents/status").get_json()
    # A miss with a matching ETag is answered 304 too, and the answer it computed is kept.
    first_health = client.get("/api/agents/health")
    app.extensions["response_cache"].clear()
    again = client.get("/api/agents/health", headers={"If-None-Match": first_health.headers["ETag"]})
    assert again.status_code == 304
    assert client.get("/api/agents/health").get_json() == first_health.get_json()


def test_a_cached_answer_is_only_for_those_allowed_to_read(make_app, orchestrator):
    client = make_app(orchestrator(), RESPONSE_CACHE_SECONDS=60, API_KEY="k" * 32,
                      REQUIRE_AUTH_FOR_READS=True).test_client()
    key = {"Authorization": "Bearer " + "k" * 32}
    assert client.get("/api/agents/status", headers=key).status_code == 200
    assert client.get("/api/agents/status", headers=key).status_code == 200  # a hit
    assert client.get("/api/agents/status").status_code == 401
    assert client.get("/api/agents/status", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/api/status").status_code == 200
    for _ in range(2):
        assert client.get("/healthz").status_code == 200  # liveness stays open, cached or not


def test_cache_hits_are_counted_under_their_route(orchestrator, tmp_path):
    with Gunicorn(orchestrator(), tmp_path / "srv", GUNICORN_WORKERS="1", RESPONSE_CACHE_SECONDS="60") as server:
        for _ in range(5):
            assert server.request("GET", "/api/agents/agent_1")[0] == 200
            status, headers, body = server.request("GET", "/healthz")
            assert (status, json.loads(body)) == (200, {"status": "ok"})
            assert headers["X-Content-Type-Options"] == "nosniff" and headers["Cache-Control"] == "no-store"
        text = server.request("GET", "/metrics")[2].decode()
    counts = {(s.labels["endpoint"], s.labels["status"]): s.value for family in text_string_to_metric_families(text)
              for s in family.samples if s.name == "dashboard_http_requests_total"}
    assert counts[("/api/agents/<agent_id>", "200")] == 5 and counts[("/healthz", "200")] == 5
