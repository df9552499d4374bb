"""The HTTP contract on the example orchestrator's real files: shapes, values, validation, errors."""
from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timedelta, timezone

import pytest
from pydantic import TypeAdapter

from conftest import EXAMPLE_AGENTS, OTHER_AGENTS
from dashboard.contract import RESPONSES

GET_ENDPOINTS = {
    "/api/dashboard/overview": "dashboard_overview",
    "/api/dashboard/quick-stats": "quick_stats",
    "/api/agents/status": "agents_status",
    "/api/agents/agent_1": "agent_detail",
    "/api/agents/health": "agents_health",
    "/api/training/status": "training_status",
    "/api/training/history?days=30": "training_history",
    "/api/training/schedule": "training_schedule",
    "/api/metrics/history/system_overall_quality?days=30": "metric_history",
    "/api/metrics/comparison": "metrics_comparison",
    "/api/metrics/trends?days=14": "metrics_trends",
    "/api/system/health": "system_health",
    "/api/system/logs/recent?limit=20": "recent_logs",
    "/api/system/errors": "system_errors",
    "/api/system/alerts": "system_alerts",
    "/api/logs/training?limit=10": "training_logs",
    "/api/storyboard/projects": "storyboard_projects",
    "/api/status": "api_status",
    "/api/endpoints": "endpoints",
}


def metrics_file(root):
    return json.loads((root / "logs" / "training_metrics.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("url,shape", GET_ENDPOINTS.items())
def test_every_get_endpoint_answers_its_contract_shape(client, url, shape):
    response = client.get(url)
    assert response.status_code == 200, response.get_json()
    assert response.content_type == "application/json"
    TypeAdapter(RESPONSES[shape]).validate_python(response.get_json())


def test_metrics_quality_arrays_align_with_timestamps(client):
    body = client.get("/api/metrics/quality?days=14").get_json()
    assert len(body["timestamps"]) >= 10
    series = {k: v for k, v in body.items() if k not in ("timestamps", "warnings")}
    assert set(series) == {"system", *EXAMPLE_AGENTS}
    assert all(len(v) == len(body["timestamps"]) for v in series.values())
    assert body["timestamps"] == sorted(body["timestamps"])


def test_agent_values_come_from_the_metrics_file(app, client):
    root = app.config["ORCHESTRATOR_PATH"]
    metrics = metrics_file(root)
    agents = {a["id"]: a for a in client.get("/api/agents/status").get_json()}
    assert list(agents) == EXAMPLE_AGENTS
    for agent_id, row in agents.items():
        last = metrics[f"{agent_id}_quality"][-1]
        assert row["quality_score"] == last["score"]
        assert row["processing_time_ms"] == last["time_ms"]
        assert row["improvement"] == last["improvement"]
    assert agents["agent_1"]["name"] == "Trend Detective"


def test_overall_quality_and_last_training_match_the_files(app, client):
    root = app.config["ORCHESTRATOR_PATH"]
    metrics = metrics_file(root)
    result = json.loads((root / "holistic_training_result.json").read_text(encoding="utf-8"))
    body = client.get("/api/dashboard/overview").get_json()
    assert body["overall_quality"] == metrics["system_overall_quality"][-1]["score"]
    # naive local time in the file -> UTC with Z (ORCHESTRATOR_TIMEZONE empty = this server's zone)
    expected = datetime.fromisoformat(result["timestamp"]).astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert body["last_training"] == expected
    assert body["current_phase"] == "idle"
    assert body["agents_trained"] == result["agents_trained"]
    assert body["warnings"] == []


def test_a_different_agent_set_is_discovered_from_the_data(make_app, orchestrator):
    client = make_app(orchestrator(agents=OTHER_AGENTS)).test_client()
    rows = client.get("/api/agents/status").get_json()
    assert [r["id"] for r in rows] == ["agent_10", "agent_11b", "agent_12"]
    assert rows[1]["name"] == "Cover Artist"
    quality = client.get("/api/metrics/quality?days=14").get_json()
    assert {"agent_10", "agent_11b", "agent_12"} <= set(quality)
    assert "agent_1" not in quality


def test_training_history_lists_runs_newest_first_with_the_failed_one(client):
    runs = client.get("/api/training/history?days=30").get_json()
    assert len(runs) >= 13
    assert [r["finished_at"] for r in runs] == sorted((r["finished_at"] for r in runs), reverse=True)
    statuses = {r["status"] for r in runs}
    assert "completed" in statuses and "failed" in statuses
    week = client.get("/api/training/history").get_json()
    assert 0 < len(week) <= 8


def test_schedule_next_run_follows_the_cron_expression_in_the_zone(make_app, orchestrator):
    root = orchestrator()
    config_path = root / "training" / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["training"]["schedule"] = "30 4 * * 1"
    config_path.write_text(json.dumps(config), encoding="utf-8")
    body = make_app(root, ORCHESTRATOR_TIMEZONE="America/New_York").test_client().get(
        "/api/training/schedule").get_json()
    assert body["schedule"] == "30 4 * * 1" and body["enabled"] is True
    assert body["timezone"] == "America/New_York"
    next_run = datetime.fromisoformat(body["next_run"].replace("Z", "+00:00"))
    from zoneinfo import ZoneInfo
    local = next_run.astimezone(ZoneInfo("America/New_York"))
    assert (local.weekday(), local.hour, local.minute) == (0, 4, 30)
    assert timedelta(0) < next_run - datetime.now(next_run.tzinfo) <= timedelta(days=7)


def test_metric_history_points_and_unknown_metric(client):
    body = client.get("/api/metrics/history/agent_1_quality?days=30").get_json()
    assert body["metric"] == "agent_1_quality" and len(body["points"]) >= 10
    assert all(p["value"] is None or 0 <= p["value"] <= 10 for p in body["points"])
    missing = client.get("/api/metrics/history/no_such_metric")
    assert missing.status_code == 404 and "no_such_metric" in missing.get_json()["error"]


@pytest.mark.parametrize("url,param", [
    ("/api/training/history?days=0", "days"),
    ("/api/training/history?days=366", "days"),
    ("/api/metrics/quality?days=abc", "days"),
    ("/api/metrics/trends?days=1.5", "days"),
    ("/api/system/logs/recent?limit=0", "limit"),
    ("/api/system/logs/recent?limit=1001", "limit"),
    ("/api/system/logs/recent?level=loud", "level"),
    ("/api/logs/export?format=xml", "format"),
    ("/api/logs/training?offset=-1", "offset"),
])
def test_bad_query_parameters_get_a_400_naming_them(client, url, param):
    response = client.get(url)
    assert response.status_code == 400
    body = response.get_json()
    assert body["status"] == 400 and param in body["error"]


@pytest.mark.parametrize("path", ["..", "agent_1%2F..%2F..%2Fetc", "a" * 65, "agent 1", "agent_1;drop"])
def test_unsafe_ids_are_rejected(client, path):
    response = client.get(f"/api/agents/{path}")
    assert response.status_code in (400, 404)
    assert response.is_json and "error" in response.get_json()


def test_unknown_agent_and_project_are_404_json(client):
    for url, word in (("/api/agents/agent_99", "agent_99"), ("/api/storyboard/project/nope", "nope")):
        response = client.get(url)
        assert response.status_code == 404 and word in response.get_json()["error"]


def test_unknown_route_and_wrong_method_are_json(client):
    missing = client.get("/api/nothing-here")
    assert missing.status_code == 404 and missing.get_json()["status"] == 404
    wrong = client.post("/api/agents/status")
    assert wrong.status_code == 405 and wrong.is_json and "GET" in wrong.headers["Allow"]
    long = client.get("/api/" + "x" * 100_000)
    assert long.status_code == 404 and len(long.get_json()["error"]) < 300  # the path is quoted, shortened


def test_endpoints_lists_every_route(client):
    rows = client.get("/api/endpoints").get_json()
    paths = {r["path"] for r in rows}
    assert {"/api/dashboard/overview", "/api/storyboard/project/create", "/api/logs/export"} <= paths
    assert len([p for p in paths if p.startswith("/api/")]) >= 25
    assert all(r["description"] for r in rows)


@pytest.mark.parametrize("fmt", ["json", "csv", "ndjson"])
def test_log_export_in_each_format(client, fmt):
    response = client.get(f"/api/logs/export?format={fmt}&days=30")
    assert response.status_code == 200
    assert f'.{fmt}"' in response.headers["Content-Disposition"]
    text = response.get_data(as_text=True)
    if fmt == "json":
        events = json.loads(text)
    elif fmt == "ndjson":
        events = [json.loads(line) for line in text.splitlines()]
    else:
        events = list(csv.DictReader(io.StringIO(text)))
    assert len(events) > 100
    assert set(events[0]) == {"timestamp", "level", "source", "message"}
    assert any("PIPELINE STARTED" in e["message"] for e in events)


def test_recent_logs_are_newest_first_and_filter_by_level(app, client):
    log = app.config["ORCHESTRATOR_PATH"] / "logs" / "holistic_training.log"
    stamp = log.read_text(encoding="utf-8").rstrip("\n").rsplit("\n", 1)[-1].split(" - ", 1)[0]
    with log.open("a", encoding="utf-8") as handle:  # an error after the last run, whatever it held
        handle.write(f"{stamp} - HolisticTrainer - ERROR - agent_2 training failed: disk quota exceeded\n")
    events = client.get("/api/system/logs/recent?limit=30").get_json()
    assert len(events) == 30
    assert [e["timestamp"] for e in events] == sorted((e["timestamp"] for e in events), reverse=True)
    errors = client.get("/api/system/logs/recent?level=error&limit=100").get_json()
    assert errors[0]["message"] == "agent_2 training failed: disk quota exceeded"
    assert all(e["level"] == "ERROR" for e in errors)
    warnings = client.get("/api/system/logs/recent?level=warning&limit=100").get_json()
    assert all(e["level"] == "WARNING" for e in warnings)


def test_storyboard_project_round_trip(client):
    body = {"name": "Launch video", "scenes": [{"title": "Intro", "duration_sec": 4.5},
                                               {"title": "Drop", "description": "bass", "duration_sec": 10}]}
    created = client.post("/api/storyboard/project/create", json=body)
    assert created.status_code == 201
    project = created.get_json()
    assert project["name"] == "Launch video" and project["scene_count"] == 2
    assert project["total_duration_sec"] == 14.5
    fetched = client.get(f"/api/storyboard/project/{project['id']}").get_json()
    assert [s["title"] for s in fetched["scenes"]] == ["Intro", "Drop"]
    assert [p["id"] for p in client.get("/api/storyboard/projects").get_json()] == [project["id"]]


def test_storyboard_projects_come_in_pages_newest_first(make_app, orchestrator):
    client = make_app(orchestrator(), POST_RATE_LIMIT=0).test_client()
    ids = [client.post("/api/storyboard/project/create", json={"name": f"p{i}"}).get_json()["id"] for i in range(105)]
    first = client.get("/api/storyboard/projects")
    assert [p["id"] for p in first.get_json()] == ids[::-1][:100]
    assert "1-100 of 105 shown" in first.headers["X-Data-Warnings"] and "offset=100" in first.headers["X-Data-Warnings"]
    rest = client.get("/api/storyboard/projects?offset=100&limit=10")
    assert [p["id"] for p in rest.get_json()] == ids[::-1][100:] and "X-Data-Warnings" not in rest.headers
    assert [p["name"] for p in client.get("/api/storyboard/projects?limit=2&offset=1").get_json()] == ["p103", "p102"]
    for bad in ("limit=0", "limit=1001", "offset=-1", "limit=x"):
        response = client.get(f"/api/storyboard/projects?{bad}")
        assert response.status_code == 400 and bad.split("=")[0] in response.get_json()["error"]


@pytest.mark.parametrize("body,field", [
    ({}, "name"),
    ({"name": ""}, "name"),
    ({"name": "x" * 201}, "name"),
    ({"name": 5}, "name"),
    ({"name": "ok", "scenes": [{"title": "a", "duration_sec": 0}]}, "scenes.0.duration_sec"),
    ({"name": "ok", "scenes": [{"duration_sec": 3}]}, "scenes.0.title"),
    ({"name": "ok", "scenes": "many"}, "scenes"),
    ({"name": "ok", "extra": 1}, "extra"),
])
def test_invalid_project_bodies_get_a_400_naming_the_field(client, body, field):
    response = client.post("/api/storyboard/project/create", json=body)
    assert response.status_code == 400 and field in response.get_json()["error"]
    assert client.get("/api/storyboard/projects").get_json() == []


def test_broken_bodies_get_json_errors(client):
    assert client.post("/api/storyboard/project/create", data="name=x").status_code == 415
    malformed = client.post("/api/storyboard/project/create", data="{", content_type="application/json")
    assert malformed.status_code == 400 and malformed.is_json
    assert "not valid JSON" in malformed.get_json()["error"]
    listed = client.post("/api/storyboard/project/create", json=["name"])
    assert listed.status_code == 400 and "must be a JSON object" in listed.get_json()["error"]
    huge = client.post("/api/storyboard/project/create", data="x" * (2 * 1024 * 1024),
                       content_type="application/json")
    assert huge.status_code == 413 and huge.get_json()["status"] == 413


def test_status_reports_provider_and_health(client):
    body = client.get("/api/status").get_json()
    assert body["provider"] == "local" and body["environment"] == "local"
    assert body["database"] == "ok" and body["data_source"] == "ok" and body["status"] == "ok"
