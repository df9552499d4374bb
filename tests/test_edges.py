"""Edges of the HTTP surface: a path starting with `//`, CORS without `Origin`, a repeated query parameter,
and the start-up warning for an ORCHESTRATOR_PATH that cannot be read. Real gunicorn on 127.0.0.1 where
the server's own parsing matters; the app in-process to see the response cache replay an answer."""
from __future__ import annotations

import http.client
import json
import re

import pytest

from servers import Gunicorn

ORIGIN = "http://localhost:3000"
INHERITED = ("CLOUD_", "API_KEY", "REQUIRE_AUTH", "ENVIRONMENT", "CORS_ORIGINS", "PROMETHEUS_")


def raw_get(server: Gunicorn, path: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
    """GET `path` exactly as written (no client normalises it); (status, headers, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=15)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def cors_headers(headers) -> list[str]:
    """The Access-Control-* header names among `headers`."""
    return [name for name in headers.keys() if name.lower().startswith("access-control-")]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """Two workers, a 60 s response cache, the React dev origin allowed, an ORCHESTRATOR_PATH that is not there."""
    tmp = tmp_path_factory.mktemp("edges")
    with Gunicorn(tmp / "no-such-orchestrator", tmp / "srv", unset=INHERITED, to_file=True, GUNICORN_WORKERS="2",
                  RESPONSE_CACHE_SECONDS="60", CORS_ORIGINS=ORIGIN, PROMETHEUS_MULTIPROC_DIR="") as srv:
        yield srv


@pytest.mark.parametrize("path", ["//api/agents/agent_1", "///api/status", "//api/status?days=7", "//healthz", "//"])
def test_a_path_starting_with_two_slashes_is_a_404(server, path):
    status, headers, body = raw_get(server, path)
    assert status == 404 and headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"error": f"no such endpoint: {path.split('?')[0]}", "status": 404}
    assert headers["X-Content-Type-Options"] == "nosniff"


def test_no_cors_headers_without_an_origin(server):
    for _ in range(3):  # the later ones may be replays of the response cache
        status, headers, _ = raw_get(server, "/api/agents/status")
        assert status == 200 and cors_headers(headers) == [] and "Origin" in headers["Vary"]
        status, headers, _ = raw_get(server, "/api/agents/status", {"Origin": ORIGIN})
        assert status == 200 and headers["Access-Control-Allow-Origin"] == ORIGIN


@pytest.mark.parametrize("query", ["days=7&days=8", "days=7&days=7", "_=1&days=30&days=1"])
def test_a_repeated_parameter_the_endpoint_reads_is_a_400_naming_it(server, query):
    assert raw_get(server, "/api/metrics/quality?days=7")[0] == 200  # kept by the cache meanwhile
    status, _, body = raw_get(server, f"/api/metrics/quality?{query}")
    assert status == 400
    assert json.loads(body) == {"error": "days must be given at most once, got 2 values", "status": 400}


@pytest.mark.parametrize("query", ["_=1&_=2", "days=7&_=1&_=2", "bust=1&bust=2&days=7"])
def test_a_repeated_parameter_nobody_reads_is_ignored(server, query):
    assert raw_get(server, f"/api/metrics/quality?{query}")[0] == 200


def test_an_unreadable_orchestrator_path_is_a_warning_once_per_start(server):
    warnings = re.findall(r"\[WARNING\] ORCHESTRATOR_PATH \S+no-such-orchestrator does not exist", server.logs())
    assert len(warnings) == 1, server.logs()[-3000:]
    assert server.logs().count("Booting worker") == 2


def test_a_cached_answer_replays_the_headers_of_its_origin(make_app, orchestrator):
    app = make_app(orchestrator(), RESPONSE_CACHE_SECONDS=60, CORS_ORIGINS=[ORIGIN])
    computed = []
    layer = app.wsgi_app  # the response cache in front of Flask
    inner = layer.wsgi_app
    layer.wsgi_app = lambda environ, start_response: computed.append(environ["PATH_INFO"]) or inner(
        environ, start_response)
    client = app.test_client()
    for _ in range(3):
        assert cors_headers(client.get("/api/agents/status").headers) == []
        with_origin = client.get("/api/agents/status", headers={"Origin": ORIGIN})
        assert with_origin.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert computed == ["/api/agents/status"] * 2  # one per origin; the rest were replays
    # A repeated parameter is never answered with the kept answer of its first value.
    assert client.get("/api/metrics/quality?days=7").status_code == 200
    assert client.get("/api/metrics/quality?days=7&days=8").status_code == 400
    assert client.get("/api/metrics/quality?days=7&_=1&_=2").status_code == 200
    assert computed.count("/api/metrics/quality") == 2
