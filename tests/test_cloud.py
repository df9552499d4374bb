"""Cloud mode end to end, with real servers on 127.0.0.1 and no mocks.

- A: a local-mode gunicorn over the example orchestrator, with API_KEY and REQUIRE_AUTH_FOR_READS.
- B: a cloud-mode gunicorn whose upstream is A (CLOUD_API_KEY = A's key): same URLs, same JSON.
- S: a scripted stub upstream (http.server in a thread) and B_S, a cloud-mode gunicorn in front of it
  (CLOUD_TIMEOUT_SECONDS=3: room for the retries and their backoff; no cache, no circuit breaker), for every way an upstream can fail.
A canary key is used everywhere; B and B_S log at DEBUG, and neither their logs nor any response body
the tests saw may contain it.
"""
from __future__ import annotations

import inspect
import json
import re
import shutil
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import urllib3

from conftest import poll

from dashboard.web import auth
from dashboard.cloud import cache as cloud_cache
from dashboard.cloud import client as cloud_client
from dashboard.cloud import retry as cloud_retry
from app import create_app
from dashboard.config import ConfigError
from servers import Gunicorn, free_port

CANARY = "canary-K3Y-7f3e9a1c5b2d4e60-never-log-me"
BODIES: list[str] = []  # every response body the tests saw; none may contain the key
STATUSES: list[int] = []  # every status the tests saw; none may be a 500
HTTP = requests.Session()
HTTP.trust_env = False  # no proxy from the environment between the tests and 127.0.0.1
AUTH = {"Authorization": f"Bearer {CANARY}"}
NO_ALERTS = {f"ALERT_{res}_{level}": "100" for res in ("CPU", "MEMORY", "DISK") for level in ("WARNING", "CRITICAL")}


def call(method: str, url: str, **kwargs) -> requests.Response:
    response = HTTP.request(method, url, timeout=30, allow_redirects=False, **kwargs)
    BODIES.append(response.text)
    STATUSES.append(response.status_code)
    return response


# --- real servers ---

# Inherited settings that would change a server's mode or keys: these come only from a test.
INHERITED_SETTINGS = ("CLOUD_", "API_KEY", "REQUIRE_AUTH", "ENVIRONMENT", "ALERT_")


def start_gunicorn(tmp: Path, name: str, port: int | None = None, **env: str) -> Gunicorn:
    """Launch a 1-worker gunicorn with its files in tmp/name (wait_ready waits for it); no proxy to 127.0.0.1."""
    root = Path(env.pop("ORCHESTRATOR_PATH", tmp / "absent"))
    settings = {"GUNICORN_WORKERS": "1", "GUNICORN_THREADS": "8", "NO_PROXY": "127.0.0.1,localhost",
                "no_proxy": "127.0.0.1,localhost", **env}
    return Gunicorn(root, tmp / name, port, unset=INHERITED_SETTINGS, to_file=True, **settings).launch()


def wait_ready(*servers: Gunicorn, seconds: float = 30) -> None:
    """Wait until every launched server accepts connections."""
    for server in servers:
        server.wait_ready(seconds)


def stop(*servers: Gunicorn) -> None:
    """Stop every server."""
    for server in servers:
        server.stop()


# --- the stub upstream ---

@dataclass
class Hit:
    at: float
    method: str
    path: str
    query: dict
    headers: dict
    body: bytes


@dataclass
class Reply:
    status: int = 200
    body: object = None  # JSON-encoded unless bytes
    headers: dict = field(default_factory=dict)
    delay: float = 0.0
    # [(bytes, before)] sent as the body instead; before: seconds to wait, or a threading.Event to wait for
    chunks: list = field(default_factory=list)
    cut_short: bool = False  # announce more bytes than are sent, then close the connection
    reset: bool = False  # no answer: close the connection with a TCP RST


class CountingServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that counts the TCP connections it accepts."""

    accepts = 0

    def get_request(self):
        request = super().get_request()
        self.accepts += 1  # only the serve_forever thread accepts
        return request


class Stub:
    """A scripted upstream: for (method, path) a list of replies, used in turn; the last one repeats."""

    def __init__(self, host: str = "127.0.0.1"):
        self.script: dict[tuple[str, str], list[Reply]] = {}
        self.hits: list[Hit] = []
        self.sent: list[bytes] = []  # the body chunks of the last scripted replies, each noted as it goes out
        self.lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                stub.serve(self)

            def do_POST(self):
                stub.serve(self)

            def log_message(self, *args):
                pass

        self.server = CountingServer((host, 0), Handler)
        self.server.daemon_threads = True
        self.server.handle_error = lambda request, address: None  # a client gone before the slow reply
        self.base = f"http://{host}:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def set(self, method: str, path: str, *replies: Reply) -> None:
        with self.lock:
            self.script[(method, path)] = list(replies)
            self.hits.clear()
            self.sent.clear()

    def count(self, method: str, path: str) -> int:
        return sum(1 for h in self.hits if h.method == method and h.path == path)

    def serve(self, handler: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        with self.lock:
            self.hits.append(Hit(time.monotonic(), handler.command, parts.path, parse_qs(parts.query),
                                 dict(handler.headers), body))
            replies = self.script.get((handler.command, parts.path)) or [Reply(404, {"error": "not scripted"})]
            reply = replies.pop(0) if len(replies) > 1 else replies[0]
        time.sleep(reply.delay)
        if reply.reset:
            handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            handler.close_connection = True
            handler.rfile.close()  # the file holds the socket open; with both closed, the RST goes out now
            handler.connection.close()
            return
        payload = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
        chunks = reply.chunks or [(payload, 0)]
        handler.send_response(reply.status)
        for name, value in {"Content-Type": "application/json", **reply.headers}.items():
            handler.send_header(name, value)
        length = sum(len(chunk) for chunk, _ in chunks) + (100 if reply.cut_short else 0)
        handler.send_header("Content-Length", str(length))
        handler.end_headers()
        for chunk, before in chunks:
            if isinstance(before, threading.Event):
                before.wait(20)  # released by the test; the deadline only keeps a failing test from hanging
            else:
                time.sleep(before)
            with self.lock:
                self.sent.append(chunk)
            handler.wfile.write(chunk)
            handler.wfile.flush()
        if reply.cut_short:
            handler.close_connection = True

    def __enter__(self) -> "Stub":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


# --- fixtures ---

@pytest.fixture(scope="module", autouse=True)
def _close_http():
    yield
    HTTP.close()


@pytest.fixture(scope="module")
def stack(_built, tmp_path_factory):
    """A (local, keys), B (cloud -> A), the stub S, B_S (cloud -> S) and another host that must stay unvisited."""
    tmp = tmp_path_factory.mktemp("cloud")
    root = tmp / "orchestrator"
    shutil.copytree(_built(None, 14), root)
    with Stub() as stub, Stub("127.0.0.2") as elsewhere:
        a_port = free_port()
        a = start_gunicorn(tmp, "A", a_port, ORCHESTRATOR_PATH=str(root), API_KEY=CANARY,
                           REQUIRE_AUTH_FOR_READS="true", **NO_ALERTS)
        common = {"ENVIRONMENT": "cloud", "CLOUD_API_KEY": CANARY, "CLOUD_ALLOW_INSECURE_HTTP": "true",
                  "CLOUD_ALLOW_ANONYMOUS_WRITES": "true",
                  "LOG_LEVEL": "DEBUG", "ORCHESTRATOR_PATH": str(tmp / "absent")}
        b = start_gunicorn(tmp, "B", CLOUD_API_URL=f"http://127.0.0.1:{a_port}", CLOUD_CACHE_SECONDS="5", **common)
        # Its tests script failure after failure: the circuit breaker (test_cloud_resilience.py) stays off.
        bs = start_gunicorn(tmp, "B_S", CLOUD_API_URL=stub.base, CLOUD_TIMEOUT_SECONDS="3",
                            CLOUD_CACHE_SECONDS="0", CLOUD_BREAKER_FAILURES="0", **common)
        try:
            wait_ready(a, b, bs)
            yield {"A": a, "B": b, "B_S": bs, "stub": stub, "elsewhere": elsewhere, "tmp": tmp}
        finally:
            stop(a, b, bs)


def strip_volatile(path: str, body):
    if path.startswith("/api/status") and isinstance(body, dict):
        return {k: v for k, v in body.items() if k not in ("provider", "environment", "uptime_seconds")}
    if path.startswith("/api/system/health") and not path.startswith("/api/system/health/") and isinstance(body, dict):
        return sorted(body)  # host readings change from one moment to the next: compare the keys
    return body


# --- A and B: the same API through the cloud provider ---

def api_get_rules(tmp: Path) -> list:
    """Every GET route under /api/ of the app (its url_map), except the never-ending event stream."""
    app = create_app({"TESTING": True, "ORCHESTRATOR_PATH": tmp / "absent", "DATABASE_PATH": tmp / "rules.db",
                      "LOG_FILE": None, "HEALTH_SAMPLE_SECONDS": 0, "INGEST_SECONDS": 0,
                      "TRAINING_RUNS_DIR": tmp / "rules-runs"})
    # the audit is each instance's own writes (docs/access.md), not the upstream's: not the same by design
    rules = [r for r in app.url_map.iter_rules() if "GET" in r.methods and r.rule.startswith("/api/")
             and not r.endpoint.startswith("stream.") and r.rule != "/api/system/audit"]
    assert len(rules) >= 24
    return rules


def test_every_get_endpoint_answers_the_same_through_the_cloud_provider(stack):
    a, b = stack["A"], stack["B"]
    created = call("POST", b.base + "/api/storyboard/project/create",
                   json={"name": "Parity", "scenes": [{"title": "One", "duration_sec": 2}]})
    assert created.status_code == 201, created.text
    agents = call("GET", a.base + "/api/agents/status", headers=AUTH).json()
    values = {"agent_id": agents[0]["id"], "metric_name": "system_overall_quality",
              "project_id": created.json()["id"], "session_id": "999999"}
    urls = []
    for rule in api_get_rules(stack["tmp"]):
        path = re.sub(r"<(?:\w+:)?(\w+)>", lambda m: str(values.get(m.group(1), "unknown-id")), rule.rule)
        urls.append(path)
    assert "/api/logs/export" in urls and f"/api/agents/{values['agent_id']}" in urls
    urls += ["/api/training/history?days=30", "/api/metrics/quality?days=14", "/api/metrics/trends?days=30",
             "/api/system/logs/recent?limit=5&level=error", "/api/logs/training?limit=5&offset=3",
             "/api/metrics/history/system_overall_quality?days=3", "/api/system/health/history?hours=2",
             "/api/agents/no_such_agent", "/api/metrics/history/no_such_metric", "/api/storyboard/project/nope",
             "/api/logs/export?format=ndjson&days=30", "/api/logs/export?format=csv&days=2",
             "/api/metrics/quality?days=0", "/api/system/errors?limit=abc"]
    statuses = set()
    for url in urls:
        ra = call("GET", a.base + url, headers=AUTH)
        rb = call("GET", b.base + url)
        statuses.add(ra.status_code)
        assert rb.status_code == ra.status_code, (url, ra.text[:300], rb.text[:300])
        assert rb.headers.get("Content-Type") == ra.headers.get("Content-Type"), url
        assert rb.headers.get("X-Data-Warnings") == ra.headers.get("X-Data-Warnings"), url
        if url == "/api/docs":  # the API reference page (HTML), served by each instance itself
            assert rb.text == ra.text, url
            continue
        if url == "/api/openapi.json":  # each instance's own document: the same routes, its own key settings
            assert rb.json()["paths"].keys() == ra.json()["paths"].keys()
            assert "securitySchemes" in ra.json()["components"] and "securitySchemes" not in rb.json()["components"]
            continue
        if url.startswith("/api/logs/export"):
            assert rb.text == ra.text and len(ra.text) > 100, url
            assert rb.headers["Content-Disposition"] == ra.headers["Content-Disposition"]
            continue
        assert strip_volatile(url, rb.json()) == strip_volatile(url, ra.json()), url
    assert {200, 400, 404} <= statuses
    status = call("GET", b.base + "/api/status").json()
    assert status["provider"] == "cloud" and status["environment"] == "cloud"
    assert status["data_source"] == "ok" and status["status"] == "ok"


def test_a_project_created_through_b_is_stored_in_a(stack):
    a, b = stack["A"], stack["B"]
    body = {"name": "Through the cloud", "description": "made on B", "scenes": [{"title": "Intro", "duration_sec": 3}]}
    created = call("POST", b.base + "/api/storyboard/project/create", json=body)
    assert created.status_code == 201
    project = created.json()
    stored = call("GET", a.base + f"/api/storyboard/project/{project['id']}", headers=AUTH)
    assert stored.status_code == 200 and stored.json() == project
    assert project["id"] in [p["id"] for p in call("GET", b.base + "/api/storyboard/projects").json()]
    for bad in ({"name": ""}, {"name": "ok", "scenes": [{"title": "a", "duration_sec": 0}]}):
        via_b = call("POST", b.base + "/api/storyboard/project/create", json=bad)
        via_a = call("POST", a.base + "/api/storyboard/project/create", json=bad, headers=AUTH)
        assert via_b.status_code == via_a.status_code == 400
        assert via_b.json() == via_a.json()


def test_b_polled_by_many_makes_one_upstream_call_per_cache_period(stack):
    a, b = stack["A"], stack["B"]

    def upstream_calls() -> int:
        """A's answers to the query so far (its worker writes the log file once it has booted)."""
        log = a.log_path.read_text(encoding="utf-8") if a.log_path.exists() else ""
        return log.count("GET /api/training/history 200")

    before = upstream_calls()
    answers = [call("GET", b.base + "/api/training/history?days=11") for _ in range(6)]  # a query no one asked yet
    assert all(r.status_code == 200 for r in answers) and len({r.text for r in answers}) == 1
    assert upstream_calls() - before == 1


def test_a_requires_its_key(stack):
    a = stack["A"]
    for headers in ({}, {"Authorization": "Bearer wrong-key"}, {"Authorization": f"Basic {CANARY}"},
                    {"Authorization": f"Bearer {CANARY}x"}):
        for method, path in (("GET", "/api/agents/status"), ("POST", "/api/storyboard/project/create"),
                             ("GET", "/api/endpoints")):
            response = call(method, a.base + path, headers=headers, json={"name": "x"})
            assert response.status_code == 401, (headers, path)
            assert response.json() == {"error": response.json()["error"], "status": 401}
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert call("GET", a.base + "/api/status").status_code == 200
    assert call("GET", a.base + "/api/agents/status", headers={"Authorization": f"bearer {CANARY}"}).status_code == 200


def test_with_only_api_key_reads_stay_open_and_writes_need_the_key(make_app, orchestrator):
    client = make_app(orchestrator(), API_KEY="k-123_local").test_client()
    assert client.get("/api/agents/status").status_code == 200
    body = {"name": "Locked"}
    refused = client.post("/api/storyboard/project/create", json=body)
    assert refused.status_code == 401 and refused.headers["WWW-Authenticate"] == "Bearer"
    assert refused.get_json() == {"error": refused.get_json()["error"], "status": 401}
    wrong = client.post("/api/storyboard/project/create", json=body, headers={"Authorization": "Bearer k-123_locaL"})
    assert wrong.status_code == 401 and "invalid" in wrong.get_json()["error"]
    assert client.post("/api/storyboard/project/create", json=body,
                       headers={"Authorization": "Bearer k-123_local"}).status_code == 201
    assert client.get("/").status_code == 200


# --- B in front of the stub: every failure mode ---

SCHEDULE = {"schedule": "0 2 * * *", "description": "At 02:00", "enabled": True, "next_run": None,
            "timezone": "UTC", "warnings": ["stale copy of training/config.json"]}
OVERVIEW = {"current_phase": "idle", "overall_quality": 8.1, "last_training": None, "next_training": None,
            "agents_trained": 3, "training_speed_ms": 10, "improvements": {}, "quality_trend": "stable",
            "warnings": []}
AGENT_ROW = {"id": "agent_1", "name": "One", "status": "online", "quality_score": 8.0, "last_updated": None,
             "processing_time_ms": 5, "improvement": 0.1, "errors": 0}
HTML_500 = b"<html><head><title>500 Internal Server Error</title></head><body><h1>Oops</h1></body></html>"
EVENTS = [{"timestamp": f"2025-01-0{i}T00:00:00Z", "level": "INFO", "source": "orchestrator", "message": f"line {i}"}
          for i in range(1, 4)]


def timed(method: str, url: str, **kwargs) -> tuple[requests.Response, float]:
    started = time.monotonic()
    response = call(method, url, **kwargs)
    return response, time.monotonic() - started


def test_a_slow_upstream_is_a_504_after_one_timeout(stack):
    stub, bs = stack["stub"], stack["B_S"]
    stub.set("GET", "/api/training/schedule", Reply(200, SCHEDULE, delay=4.5))
    response, elapsed = timed("GET", bs.base + "/api/training/schedule")
    assert response.status_code == 504 and response.json()["status"] == 504
    assert "timed out" in response.json()["error"]
    assert elapsed >= 3  # CLOUD_TIMEOUT_SECONDS=3 passed before the answer
    assert stub.count("GET", "/api/training/schedule") == 1  # read timeouts are not retried


def test_a_get_is_retried_through_503s(stack):
    stub, bs = stack["stub"], stack["B_S"]
    stub.set("GET", "/api/system/alerts", Reply(503), Reply(503), Reply(200, []))
    assert call("GET", bs.base + "/api/system/alerts").status_code == 200
    assert stub.count("GET", "/api/system/alerts") == 3
    stub.set("GET", "/api/agents/status", Reply(503, {"error": "down"}))
    response = call("GET", bs.base + "/api/agents/status")
    assert response.status_code == 502 and "503" in response.json()["error"]
    assert stub.count("GET", "/api/agents/status") == 1 + cloud_client.RETRIES


@pytest.mark.parametrize("path,body", [("/api/storyboard/project/create", {"name": "x"}),
                                       ("/api/training/start", {"force": True})])
def test_a_post_is_never_retried(stack, path, body):
    stub, bs = stack["stub"], stack["B_S"]
    stub.set("POST", path, Reply(503), Reply(201, {}))
    response = call("POST", bs.base + path, json=body)
    assert response.status_code == 502 and "503" in response.json()["error"]
    assert stub.count("POST", path) == 1
    assert json.loads(stub.hits[0].body) == body


def test_retry_after_is_honoured_and_a_long_one_is_not_waited_for(stack):
    stub, bs = stack["stub"], stack["B_S"]
    stub.set("GET", "/api/metrics/comparison", Reply(429, headers={"Retry-After": "1"}), Reply(200, []))
    assert call("GET", bs.base + "/api/metrics/comparison").status_code == 200
    first, second = [h.at for h in stub.hits if h.path == "/api/metrics/comparison"]
    assert second - first >= 1.0
    stub.set("GET", "/api/system/errors", Reply(429, headers={"Retry-After": "30"}))
    response = call("GET", bs.base + "/api/system/errors")
    assert response.status_code == 502 and "429" in response.json()["error"]
    assert stub.count("GET", "/api/system/errors") == 1  # no retry, so no wait: waiting would end in a retry


@pytest.mark.parametrize("path,reply,expected", [
    ("/api/dashboard/quick-stats", Reply(200, b"{not json"), "invalid JSON"),
    ("/api/dashboard/overview", Reply(200, {k: v for k, v in OVERVIEW.items() if k != "overall_quality"}),
     "upstream response invalid: overall_quality: Field required"),
    ("/api/agents/status", Reply(200, [{**AGENT_ROW, "quality_score": "high"}]),
     "upstream response invalid: 0.quality_score"),
    ("/api/agents/status", Reply(200, [{**AGENT_ROW, "secret": 1}]), "0.secret: Extra inputs are not permitted"),
    ("/api/metrics/quality", Reply(200, {"timestamps": ["2025-01-01"], "system": [1.0, 2.0], "warnings": []}),
     "system: 2 values for 1 timestamps"),
    ("/api/agents/health", Reply(401, {"error": "bad token"}), "rejected the credentials"),
    ("/api/agents/health", Reply(403, {"error": "forbidden"}), "rejected the credentials"),
    ("/api/system/alerts", Reply(500, {"error": "boom"}), "HTTP 500"),
    ("/api/system/alerts", Reply(500, HTML_500, {"Content-Type": "text/html"}), "HTTP 500"),
    ("/api/system/alerts", Reply(502, HTML_500, {"Content-Type": "text/html"}), "HTTP 502 after 3 retries"),
])
def test_upstream_failures_are_502_naming_what_went_wrong(stack, path, reply, expected):
    stub, bs = stack["stub"], stack["B_S"]
    stub.set("GET", path, reply)
    response = call("GET", bs.base + path)
    assert response.status_code == 502, response.text
    assert response.json()["status"] == 502 and expected in response.json()["error"]


@pytest.mark.parametrize("method,path,tries", [("GET", "/api/agents/health", 1 + cloud_client.RETRIES),
                                               ("POST", "/api/training/stop", 1)])
def test_a_connection_reset_by_the_upstream_is_a_502(stack, method, path, tries):
    stub, bs = stack["stub"], stack["B_S"]
    stub.set(method, path, Reply(reset=True))
    response = call(method, bs.base + path)
    assert response.status_code == 502 and "unreachable" in response.json()["error"]
    assert stub.count(method, path) == tries  # a GET is retried, a POST is not


def test_a_redirect_is_a_502_and_the_other_host_gets_nothing(stack):
    stub, bs, elsewhere = stack["stub"], stack["B_S"], stack["elsewhere"]
    elsewhere.set("GET", "/api/training/history", Reply(200, []))
    stub.set("GET", "/api/training/history", Reply(302, b"", {"Location": elsewhere.base + "/api/training/history"}))
    response = call("GET", bs.base + "/api/training/history")
    assert response.status_code == 502 and "redirect" in response.json()["error"]
    assert stub.count("GET", "/api/training/history") == 1
    assert elsewhere.hits == []


def test_client_errors_and_successes_pass_through(stack):
    stub, bs = stack["stub"], stack["B_S"]
    stub.set("GET", "/api/agents/ghost", Reply(404, {"error": f"unknown agent_id: ghost (you sent {CANARY})",
                                                     "status": 404}))
    response = call("GET", bs.base + "/api/agents/ghost")
    assert response.status_code == 404
    assert response.json() == {"error": "unknown agent_id: ghost (you sent [redacted])", "status": 404}
    started = {"session_id": 7, "status": "running", "started_at": "2025-01-01T00:00:00Z", "warnings": []}
    stub.set("POST", "/api/training/start", Reply(202, started))
    response = call("POST", bs.base + "/api/training/start", json={"force": False})
    assert response.status_code == 202 and response.json() == started
    stub.set("POST", "/api/training/start", Reply(409, {"error": "a training run is going", "status": 409,
                                                        "session_id": 7}))
    response = call("POST", bs.base + "/api/training/start")
    assert response.status_code == 409
    assert response.json() == {"error": "a training run is going", "status": 409, "session_id": 7}
    stub.set("POST", "/api/storyboard/project/create", Reply(400, {"error": "invalid body: name: taken", "status": 400}))
    response = call("POST", bs.base + "/api/storyboard/project/create", json={"name": "taken"})
    assert response.status_code == 400 and response.json()["error"] == "invalid body: name: taken"


def test_warnings_pass_through_in_body_and_header(stack):
    stub, bs = stack["stub"], stack["B_S"]
    stub.set("GET", "/api/training/schedule", Reply(200, SCHEDULE))
    assert call("GET", bs.base + "/api/training/schedule").json() == SCHEDULE
    stub.set("GET", "/api/system/alerts", Reply(200, [], {"X-Data-Warnings": json.dumps(["log rotated"])}))
    response = call("GET", bs.base + "/api/system/alerts")
    assert response.json() == [] and json.loads(response.headers["X-Data-Warnings"]) == ["log rotated"]


def test_the_log_export_streams_from_the_upstream_ndjson(stack):
    stub, bs = stack["stub"], stack["B_S"]
    ndjson = "".join(json.dumps(e) + "\n" for e in EVENTS).encode()
    stub.set("GET", "/api/logs/export", Reply(200, ndjson, {"Content-Type": "application/x-ndjson"}))
    response = call("GET", bs.base + "/api/logs/export?format=json&days=3")
    assert response.status_code == 200 and response.json() == EVENTS
    assert stub.hits[-1].query == {"format": ["ndjson"], "days": ["3"]}
    stub.set("GET", "/api/logs/export", Reply(401, {"error": "no"}))
    response = call("GET", bs.base + "/api/logs/export?format=csv")
    assert response.status_code == 502 and "credentials" in response.json()["error"]


def test_the_export_is_passed_on_while_the_upstream_still_sends(stack):
    stub, bs = stack["stub"], stack["B_S"]
    lines = [(json.dumps(e) + "\n").encode() for e in EVENTS]
    rest = threading.Event()  # the upstream sends the other lines only once the first one has reached the test
    stub.set("GET", "/api/logs/export", Reply(200, chunks=[(lines[0], 0), (lines[1], rest), (lines[2], 0)]))
    with HTTP.get(bs.base + "/api/logs/export?format=ndjson", stream=True, timeout=30) as response:
        received = response.iter_lines()
        assert json.loads(next(received)) == EVENTS[0]
        sent_before = list(stub.sent)
        rest.set()
        assert [json.loads(line) for line in received] == EVENTS[1:]
    assert sent_before == lines[:1], "the first line was held back until the upstream had sent them all"


def test_an_export_broken_off_upstream_is_broken_off_here_too(stack):
    stub, bs = stack["stub"], stack["B_S"]
    stub.set("GET", "/api/logs/export", Reply(200, chunks=[(json.dumps(EVENTS[0]).encode() + b"\n", 0)],
                                              cut_short=True))
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        HTTP.get(bs.base + "/api/logs/export?format=json", timeout=30).json()


def test_status_reports_an_unreachable_upstream_as_an_error(stack):
    stub, bs = stack["stub"], stack["B_S"]
    stub.set("GET", "/api/status", Reply(500, {"error": "down"}))
    body = call("GET", bs.base + "/api/status").json()
    assert body["data_source"] == "error" and body["status"] == "error" and body["provider"] == "cloud"


def test_every_upstream_request_carries_the_key_only_as_a_bearer_header(stack):
    stub, bs = stack["stub"], stack["B_S"]
    stub.set("GET", "/api/agents/status", Reply(200, [AGENT_ROW]))
    assert call("GET", bs.base + "/api/agents/status").json() == [AGENT_ROW]
    hit = stub.hits[-1]
    assert hit.headers["Authorization"] == f"Bearer {CANARY}" and hit.query == {}
    assert CANARY not in hit.path


# --- in-process: closed port, cache, configuration ---

def cloud_app(tmp_path: Path, **config):
    settings = {"TESTING": True, "ENVIRONMENT": "cloud", "CLOUD_API_KEY": CANARY, "CLOUD_ALLOW_INSECURE_HTTP": True,
                "CLOUD_ALLOW_ANONYMOUS_WRITES": True,
                "ORCHESTRATOR_PATH": tmp_path / "absent", "DATABASE_PATH": tmp_path / "db.sqlite", "LOG_FILE": None,
                "HEALTH_SAMPLE_SECONDS": 0, "TRAINING_RUNS_DIR": tmp_path / "runs", **config}
    return create_app(settings)


def timed_local(method, *args, **kwargs):
    started = time.monotonic()
    response = method(*args, **kwargs)
    return response, time.monotonic() - started


def counted_connects(monkeypatch) -> list[tuple]:
    """The addresses urllib3 opens a TCP connection to from now on (one entry per attempt)."""
    attempts, connect = [], urllib3.util.connection.create_connection

    def counting(address, *args, **kwargs):
        attempts.append(address)
        return connect(address, *args, **kwargs)

    monkeypatch.setattr(urllib3.util.connection, "create_connection", counting)
    return attempts


def test_a_closed_port_is_a_502(tmp_path, monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    port = free_port()
    app = cloud_app(tmp_path, CLOUD_API_URL=f"http://127.0.0.1:{port}", CLOUD_CACHE_SECONDS=0)
    attempts = counted_connects(monkeypatch)
    try:
        response, elapsed = timed_local(app.test_client().get, "/api/agents/status")
        assert response.status_code == 502 and "unreachable" in response.get_json()["error"]
        assert CANARY not in response.get_data(as_text=True)
        assert attempts == [("127.0.0.1", port)] * (1 + cloud_client.RETRIES)  # a GET reconnects 3 times
        assert elapsed >= 1.5  # with backoff sleeps of 0, 0.6 and 1.2 s between the attempts
        attempts.clear()
        response = app.test_client().post("/api/storyboard/project/create", json={"name": "x"})
        assert response.status_code == 502 and attempts == [("127.0.0.1", port)]  # a POST is tried once
        status = app.test_client().get("/api/status").get_json()
        assert status["data_source"] == "error"
    finally:
        app.extensions["provider"].client.close()


def test_the_cache_keys_on_path_and_query_and_never_keeps_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    health = {"overall_status": "healthy", "total": 1, "by_status": {"online": 1}, "quality_threshold": 7.0,
              "below_threshold": [], "average_quality": 8.0, "warnings": []}
    with Stub() as stub:
        app = cloud_app(tmp_path, CLOUD_API_URL=stub.base, CLOUD_CACHE_SECONDS=30)
        client = app.test_client()
        try:
            stub.set("GET", "/api/agents/health", Reply(404, {"error": "not yet"}), Reply(200, health))
            assert client.get("/api/agents/health").status_code == 404
            assert client.get("/api/agents/health").get_json() == health
            assert client.get("/api/agents/health").get_json() == health
            assert stub.count("GET", "/api/agents/health") == 2
            stub.set("GET", "/api/training/history", Reply(200, []))
            for days in (3, 4, 3, 4):
                assert client.get(f"/api/training/history?days={days}").status_code == 200
            assert stub.count("GET", "/api/training/history") == 2
        finally:
            app.extensions["provider"].client.close()


def test_concurrent_misses_make_one_upstream_call(monkeypatch):
    cache, calls, misses = cloud_cache.TTLCache(5), [], []
    kept = cache._cache.entry  # each caller looks the key up once on the way in, the loader once more

    def noting_misses(key):
        entry = kept(key)
        if entry is None:
            misses.append(key)
        return entry

    monkeypatch.setattr(cache._cache, "entry", noting_misses)

    def load():
        calls.append(1)
        # All 8 callers missed before the value is there: each once on the way in, the loader once more.
        poll(lambda: len(misses), lambda n: n >= 8 + 1, 10)
        return {"value": 1}

    results = []
    threads = [threading.Thread(target=lambda: results.append(cache.get_or_load("k", load))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1 and results == [{"value": 1}] * 8
    results[0]["value"] = 2
    assert cache.get_or_load("k", load) == {"value": 1}


@pytest.mark.parametrize("config,message", [
    ({"CLOUD_API_URL": ""}, "CLOUD_API_URL"),
    ({"CLOUD_API_KEY": ""}, "CLOUD_API_KEY"),
    ({"CLOUD_ALLOW_INSECURE_HTTP": False}, "https://"),
    ({"CLOUD_API_URL": "ftp://example.com"}, "https://"),
    ({"CLOUD_API_URL": "https://user:pw@example.com"}, "must not contain credentials"),
    ({"CLOUD_API_KEY": "two words"}, "CLOUD_API_KEY must be printable ASCII"),
])
def test_settings_that_cannot_work_stop_the_start(tmp_path, config, message):
    settings = {"CLOUD_API_URL": "http://127.0.0.1:9", **config}
    with pytest.raises(ConfigError, match=re.escape(message)) as err:
        cloud_app(tmp_path, **settings)
    assert CANARY not in str(err.value) and "two words" not in str(err.value)


def test_https_is_accepted_without_the_insecure_flag(tmp_path):
    app = cloud_app(tmp_path, CLOUD_API_URL="https://cloud.example.com/", CLOUD_ALLOW_INSECURE_HTTP=False)
    assert app.extensions["provider"].client.base_url == "https://cloud.example.com"


def test_retry_policies():
    reads, writes = cloud_retry.read_retry(), cloud_retry.write_retry()
    assert reads.total == 3 and set(reads.status_forcelist) == {429, 502, 503, 504}
    assert reads.allowed_methods == frozenset({"GET"}) and reads.raise_on_status is False
    assert reads.respect_retry_after_header and reads.backoff_max <= 5
    assert not writes.is_retry("POST", 503, True) and not reads.is_retry("POST", 503, True)


def test_every_cloud_read_and_write_is_checked_against_a_contract_model():
    from dashboard.cloud import provider as cloud_provider
    import data_providers
    from pydantic import TypeAdapter

    forwarded = [member.row for member in vars(cloud_provider.CloudDataProvider).values() if hasattr(member, "row")]
    assert len(forwarded) >= 20  # one forwarder per row of the endpoint table, none checked by hand
    for row in forwarded:
        assert row.response is not None and not isinstance(row.response, str), row.rule
        TypeAdapter(row.response)  # a contract model (or a list of them)
    abstract = {name for name, member in vars(data_providers.DataProvider).items()
                if getattr(member, "__isabstractmethod__", False)}
    assert abstract <= set(vars(cloud_provider.CloudDataProvider))
    assert data_providers.DataProviderFactory.provider_class("cloud") is cloud_provider.CloudDataProvider


def test_the_key_is_compared_in_constant_time_only():
    source = inspect.getsource(auth)
    assert "hmac.compare_digest(" in source
    secret = r"\b(key|expected|supplied|token|API_KEY)\b"
    for line in source.splitlines():
        code = line.split("#")[0]
        assert not re.search(secret + r"\s*[!=]=|[!=]=\s*" + secret, code), line


# --- last: the key leaked nowhere ---

def test_the_key_is_in_no_log_line_and_no_response_and_nothing_was_a_500(stack):
    stub, b, bs = stack["stub"], stack["B"], stack["B_S"]
    stub.set("GET", "/api/agents/status", Reply(401, {"error": f"bad key {CANARY}"}))
    call("GET", bs.base + "/api/agents/status")
    call("GET", b.base + "/api/agents/no_such_agent")
    for server in (b, bs):
        logs = server.logs()
        assert "urllib3.connectionpool" in logs and " DEBUG " in logs  # the capture really is at DEBUG
        assert CANARY not in logs, server.name
        assert "unhandled error" not in logs, server.name
    assert CANARY not in stack["A"].logs()
    assert BODIES and not [body for body in BODIES if CANARY in body]
    assert STATUSES and 500 not in STATUSES
