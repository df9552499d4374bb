"""Caches are bounded by bytes: the parse cache keeps one version of each file within its budget, and the
response cache keeps its answers within its budget, drops expired ones, and keys them by the query
parameters their endpoint reads (a cache-buster such as `_=` or `bust=N` maps to the one entry).
"""
from __future__ import annotations

import json

import pytest

from dashboard.web import endpoints
from dashboard.web import openapi
from dashboard.web import response_cache
from conftest import ingest
from test_production import StepClock

HISTORY = "/api/metrics/history/system_overall_quality?days=30"


def newest_score(client) -> float:
    body = client.get(HISTORY).get_json()
    return max(body["points"], key=lambda p: p["timestamp"])["value"]


def rewrite_newest_score(path, score: float) -> None:
    metrics = json.loads(path.read_text(encoding="utf-8"))
    max(metrics["system_overall_quality"], key=lambda p: p["timestamp"])["score"] = score
    path.write_text(json.dumps(metrics, indent=2), encoding="utf-8")  # in place, as the orchestrator does


def test_a_metrics_file_rewritten_many_times_keeps_one_parsed_version(make_app, orchestrator):
    root = orchestrator()
    path = root / "logs" / "training_metrics.json"
    app = make_app(root)
    client = app.test_client()
    parses, ingested = app.extensions["provider"].parse_cache, app.extensions["ingester"].parse_cache
    scores = [round(5 + i / 100, 2) for i in range(11, 60) if i % 10]  # each "5.xy": the file keeps its size
    rewrite_newest_score(path, 5.01)
    client.get("/api/dashboard/overview")
    assert newest_score(client) == 5.01
    ingest(app)
    first = (len(parses), parses.bytes, len(ingested), ingested.bytes)
    for score in scores:
        rewrite_newest_score(path, score)
        assert newest_score(client) == score  # this version was parsed and answered
        client.get("/api/dashboard/overview")
        ingest(app)
    assert (len(parses), parses.bytes, len(ingested), ingested.bytes) == first
    assert parses.bytes >= path.stat().st_size  # the metrics file is charged what was read of it
    assert parses.bytes <= parses.max_bytes and ingested.bytes <= ingested.max_bytes


def test_the_parse_cache_stays_within_its_byte_budget(make_app, orchestrator):
    root = orchestrator()
    metrics_bytes = (root / "logs" / "training_metrics.json").stat().st_size
    # Smaller than the folder's files: some parses are dropped, and answers go on.
    app = make_app(root, PARSE_CACHE_MAX_BYTES=metrics_bytes + 4096)
    cache = app.extensions["provider"].parse_cache
    client = app.test_client()
    for url in ("/api/dashboard/overview", "/api/agents/status", HISTORY, "/api/system/logs/recent",
                "/api/training/schedule"):
        assert client.get(url).status_code == 200
        assert 0 < cache.bytes <= cache.max_bytes


def test_cache_busters_and_unknown_parameters_map_to_one_cached_answer(make_app, orchestrator):
    app = make_app(orchestrator(), RESPONSE_CACHE_SECONDS=60)
    client = app.test_client()
    cache = app.extensions["response_cache"]
    first = client.get("/api/metrics/quality?days=30")
    for query in [f"days=30&bust={n}" for n in range(20)] + ["_=1733150000000&days=30", "days=30&_=1&_=2"]:
        response = client.get(f"/api/metrics/quality?{query}")
        assert response.status_code == 200 and response.data == first.data  # never a 400 for `_=`
    assert len(cache) == 1
    # `days` given twice is a 400 naming it, never the kept answer of days=30, and is not kept itself.
    assert client.get("/api/metrics/quality?days=30&days=5").get_json()["error"].startswith("days must be given")
    assert len(cache) == 1
    assert client.get("/api/metrics/quality?days=7&_=2").get_json()["timestamps"] != first.get_json()["timestamps"]
    for n in range(5):
        assert client.get(f"/api/agents/status?_={n}").status_code == 200  # reads no parameter at all
    assert len(cache) == 3
    assert client.get("/api/metrics/quality?days=abc&_=1").status_code == 400  # errors are not kept
    assert len(cache) == 3


def test_the_response_cache_stays_within_its_byte_budget(make_app, orchestrator):
    app = make_app(orchestrator(), RESPONSE_CACHE_SECONDS=60, RESPONSE_CACHE_MAX_BYTES=8 << 10)
    client = app.test_client()
    cache = app.extensions["response_cache"]
    sizes = []
    for days in range(1, 60):
        response = client.get(f"/api/metrics/quality?days={days}")
        assert response.status_code == 200
        sizes.append(len(response.data))
        assert cache.bytes <= cache.max_bytes
    assert sum(sizes) > cache.max_bytes and 0 < len(cache) < len(sizes)  # the oldest made room
    assert client.get("/api/metrics/quality?days=59").data == response.data  # the newest is still served


def test_expired_answers_are_dropped_unless_being_recomputed(monkeypatch):
    clock = StepClock()
    monkeypatch.setattr(response_cache, "time", clock)
    cache = response_cache.ResponseCache(ttl=1, max_bytes=1 << 20)

    def put(key, body, headers):
        cache.answers.put(key, response_cache.answer_of(body, headers, key[0]), None)
    for n in range(10):
        put((f"/api/a/{n}", (), ""), b"x" * 1000, [("Content-Type", "application/json")])
    busy = ("/api/a/0", (), "")
    lock = cache.answers.claim(busy)
    lock.acquire()  # a request recomputing /api/a/0: waiters replay its expired answer meanwhile
    clock.advance(1.5)
    put(("/api/b", (), ""), b"{}", [("Content-Type", "application/json")])
    assert len(cache) == 2 and cache.get(busy) is not None and cache.get(("/api/a/5", (), "")) is None
    put(busy, b"{}", [])  # its recomputation is stored
    cache.answers.release(busy, lock)
    assert cache.bytes == sum(cache.get(k).cost for k in (busy, ("/api/b", (), "")))


def test_every_view_declares_the_query_parameters_the_api_documents(app):
    paths = openapi.document(app)["paths"]
    for rule in app.url_map.iter_rules():
        documented = {p["name"] for op in paths.get(openapi.openapi_path(rule.rule), {}).values()
                      for p in op.get("parameters", []) if p["in"] == "query"}
        declared = endpoints.query_names(endpoints.rows_of(app).get(rule.endpoint))
        assert set(declared) == documented, rule.rule


@pytest.mark.parametrize("declared", [True, False])
def test_a_view_reading_an_undeclared_parameter_fails_loudly(make_app, orchestrator, declared):
    from dashboard.web import routes
    from dashboard.web.queries import Days
    from dashboard.web.validation import query
    app = make_app(orchestrator())

    def view():
        return {"days": query(Days).days}
    if declared:
        routes.register(app, [endpoints.get("/api/_probe", "probe", "json_object", "A probe.", query=Days, view=view)])
    else:
        app.add_url_rule("/api/_probe", "probe", view)
    response = app.test_client().get("/api/_probe?days=3")
    assert response.status_code == (200 if declared else 500)
