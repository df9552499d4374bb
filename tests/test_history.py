"""History in SQLite: ingestion, what survives the orchestrator deleting files, events, alerts, health history."""
from __future__ import annotations

import json
import sqlite3
from datetime import datetime
from pathlib import Path

import pytest

from dashboard.local import alert_rules
from dashboard.ops import sampler
RUN_FAILED = "Holistic training failed: corrupt record 137 in harvested batch (written by the test)"


def count(db_path, table: str) -> int:
    with sqlite3.connect(db_path) as conn:
        return conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


def log_line(at: datetime, level: str, message: str) -> str:
    """One line as the orchestrator logs it."""
    return f"{at:%Y-%m-%d %H:%M:%S},{at.microsecond // 1000:03d} - HolisticTrainer - {level} - {message}\n"


def log_failed_run(root: Path, at: datetime) -> None:
    """Append a run that fails with RUN_FAILED at `at` to the orchestrator's log."""
    with open(root / "logs" / "holistic_training.log", "a", encoding="utf-8") as log:
        log.write(log_line(at, "INFO", "HOLISTIC TRAINING PIPELINE STARTED") + log_line(at, "ERROR", RUN_FAILED))


def logged_runs(root: Path) -> int:
    """How many runs the orchestrator's log shows starting."""
    return (root / "logs" / "holistic_training.log").read_text(encoding="utf-8").count("PIPELINE STARTED")


def set_newest_score(root: Path, agent_id: str, score: float) -> None:
    """Make `score` the newest quality point of `agent_id` in the metrics file."""
    path = root / "logs" / "training_metrics.json"
    data = json.loads(path.read_text())
    data[f"{agent_id}_quality"][-1]["score"] = score
    path.write_text(json.dumps(data))


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "db.sqlite"


def test_ingesting_the_same_files_twice_adds_nothing(make_app, orchestrator, db_path):
    root, same = orchestrator(), orchestrator()
    now = datetime.now()
    for folder in (root, same):
        log_failed_run(folder, now)
    client = make_app(root).test_client()
    first = client.get("/api/metrics/trends?days=30").get_json()
    rows = {t: count(db_path, t) for t in ("metrics", "training_sessions", "events")}
    assert rows["metrics"] > 100 and rows["training_sessions"] == logged_runs(root) and rows["events"] >= 1
    # A second app (another worker) over the same files (a copy: same content) and database.
    again = make_app(same).test_client()
    assert again.get("/api/metrics/trends?days=30").get_json() == first
    again.get("/api/training/history?days=30")
    assert {t: count(db_path, t) for t in rows} == rows


def test_a_changed_metrics_file_updates_its_rows(make_app, orchestrator, db_path):
    root = orchestrator()
    client = make_app(root).test_client()
    before = client.get("/api/metrics/history/agent_1_quality?days=30").get_json()["points"]
    rows = count(db_path, "metrics")
    path = root / "logs" / "training_metrics.json"
    data = json.loads(path.read_text())
    data["agent_1_quality"][-1]["score"] = 1.25
    path.write_text(json.dumps(data))
    after = make_app(root).test_client().get("/api/metrics/history/agent_1_quality?days=30").get_json()["points"]
    assert after[-1]["value"] == 1.25 and before[-1]["value"] != 1.25
    assert after[:-1] == before[:-1]
    assert count(db_path, "metrics") == rows


def test_history_outlives_the_files_the_orchestrator_deletes(make_app, orchestrator):
    root = orchestrator()
    client = make_app(root).test_client()
    urls = ["/api/training/history?days=30", "/api/metrics/trends?days=30", "/api/metrics/quality?days=30",
            "/api/metrics/history/system_overall_quality?days=30"]
    before = {url: client.get(url).get_json() for url in urls}
    assert len(before[urls[0]]) == logged_runs(root)
    # Retention: every daily report gone, the metrics file keeps only its newest point per series.
    for report in (root / "logs").glob("daily_report_*.txt"):
        report.unlink()
    path = root / "logs" / "training_metrics.json"
    data = json.loads(path.read_text())
    path.write_text(json.dumps({key: points[-1:] for key, points in data.items()}))
    after_client = make_app(root).test_client()
    for url in urls:
        after = after_client.get(url).get_json()
        if isinstance(after, dict):
            after.pop("warnings", None), before[url].pop("warnings", None)
        assert after == before[url], url


def test_history_falls_back_to_the_files_when_the_database_is_unusable(make_app, orchestrator, tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    root = orchestrator()
    client = make_app(root, DATABASE_PATH=blocker / "db.sqlite").test_client()
    response = client.get("/api/training/history?days=30")
    assert response.status_code == 200 and len(response.get_json()) == logged_runs(root)
    assert "database unavailable" in response.headers["X-Data-Warnings"]
    trends = client.get("/api/metrics/trends?days=30").get_json()
    assert any(v is not None for v in trends["system"])
    assert any("database unavailable" in w for w in trends["warnings"])
    assert client.post("/api/storyboard/project/create", json={"name": "x"}).status_code == 503


def test_orchestrator_errors_are_kept_as_events(make_app, orchestrator, db_path):
    root = orchestrator()
    log_failed_run(root, datetime.now())
    client = make_app(root).test_client()
    errors = client.get("/api/system/errors?limit=100").get_json()
    assert any(e["message"] == RUN_FAILED for e in errors)
    with sqlite3.connect(db_path) as conn:
        stored = conn.execute("SELECT message FROM events WHERE event_type = 'orchestrator_log'"
                              " AND severity = 'error'").fetchall()
    assert any(RUN_FAILED in m for (m,) in stored)
    # Logs rotated away: the errors are still listed, from the database.
    for log in (root / "logs").glob("*.log"):
        log.unlink()
    later = make_app(root).test_client().get("/api/system/errors?limit=100").get_json()
    assert any(e["message"] == RUN_FAILED for e in later)


def test_api_errors_become_events(make_app, orchestrator, tmp_path):
    root = orchestrator()
    db = tmp_path / "db.sqlite"
    client = make_app(root).test_client()
    with sqlite3.connect(db) as conn:  # a database the app can no longer write to
        conn.execute("CREATE TRIGGER no_projects BEFORE INSERT ON storyboard_projects"
                     " BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END")
    response = client.post("/api/storyboard/project/create", json={"name": "x"})
    assert response.status_code == 503 and "Traceback" not in response.get_data(as_text=True)
    errors = client.get("/api/system/errors?limit=200").get_json()
    assert any(e["source"] == "api" and "answered 503" in e["message"] for e in errors)
    assert client.get("/api/dashboard/quick-stats").get_json()["errors_24h"] >= 1


def test_host_alerts_fire_and_clear_with_events(make_app, orchestrator):
    root = orchestrator()
    hot = make_app(root, ALERT_DISK_WARNING=0.1, ALERT_DISK_CRITICAL=100.0).test_client()
    alerts = {a["id"]: a for a in hot.get("/api/system/alerts").get_json()}
    assert alerts["host.disk"]["severity"] == "warning" and alerts["host.disk"]["since"].endswith("Z")
    again = {a["id"]: a for a in hot.get("/api/system/alerts").get_json()}
    assert again["host.disk"]["since"] == alerts["host.disk"]["since"]
    calm = make_app(root).test_client()  # make_app's thresholds: 0, host alerts off
    assert "host.disk" not in {a["id"] for a in calm.get("/api/system/alerts").get_json()}
    log = calm.get("/api/system/logs/recent?limit=500").get_json()
    messages = [e["message"] for e in log if e["source"] == "alerts"]
    assert any(m.startswith("alert raised: disk at") for m in messages)
    assert any(m.startswith("alert cleared: disk at") for m in messages)


def test_a_host_threshold_of_0_turns_that_level_off():
    pegged = {"cpu_percent": 100.0, "memory_percent": 100.0, "disk_percent": 100.0, "timestamp": "2026-01-01T00:00:00Z"}
    limits = {f"ALERT_{r}_{lvl}": 0.0 for r in ("CPU", "MEMORY", "DISK") for lvl in ("WARNING", "CRITICAL")}
    assert alert_rules.host_alerts(pegged, limits) == []
    limits["ALERT_CPU_WARNING"] = 100.0  # the warning on, the critical level off
    assert [(a["id"], a["severity"]) for a in alert_rules.host_alerts(pegged, limits)] == [("host.cpu", "warning")]


def test_alert_since_is_kept_while_it_stays_active(make_app, orchestrator, db_path):
    root = orchestrator()
    set_newest_score(root, "agent_3", 2.0)
    client = make_app(root, QUALITY_THRESHOLD=7.0).test_client()
    first = {a["id"]: a["since"] for a in client.get("/api/system/alerts").get_json()}
    assert "agent.agent_3.low_quality" in first
    second = {a["id"]: a["since"] for a in client.get("/api/system/alerts").get_json()}
    assert second == first
    with sqlite3.connect(db_path) as conn:
        raised = conn.execute("SELECT COUNT(*) FROM events WHERE event_type = 'alert_raised'").fetchone()[0]
    assert raised == len(first)


def test_health_history_serves_stored_samples(make_app, orchestrator, db_path):
    client = make_app(orchestrator()).test_client()
    empty = client.get("/api/system/health/history").get_json()
    assert empty["samples"] == [] and empty["hours"] == 24 and empty["warnings"]
    conn = sqlite3.connect(db_path, isolation_level=None)
    sample = {"timestamp": "2000-01-01T00:00:00Z", "cpu_percent": 1.0, "memory_percent": 2.0,
              "disk_percent": 3.0, "uptime_seconds": 4, "active_connections": 5}
    sampler.store_sample(conn, sample)  # older than any retention
    from dashboard.ops.host_health import read_sample
    fresh = read_sample()
    sampler.store_sample(conn, fresh)
    body = client.get("/api/system/health/history?hours=1").get_json()
    assert [s["timestamp"] for s in body["samples"]] == [fresh["timestamp"]]
    assert body["samples"][0]["memory_percent"] == round(fresh["memory_percent"], 1)
    assert sampler.prune(conn, retention_days=30) == 1
    assert count(db_path, "system_health") == 1
    for bad in ("0", "721", "x"):
        response = client.get(f"/api/system/health/history?hours={bad}")
        assert response.status_code == 400 and "hours" in response.get_json()["error"]


def test_metric_history_falls_back_to_report_scores_when_the_metrics_file_is_too_large(make_app, orchestrator):
    root = orchestrator()
    (root / "logs" / "training_metrics.json").write_bytes(b"{" + b" " * (11 << 20) + b"}")
    reports = len(list((root / "logs").glob("daily_report_*.txt")))  # all within the last 30 days
    client = make_app(root).test_client()
    body = client.get("/api/metrics/history/system_overall_quality?days=30").get_json()
    assert len(body["points"]) == reports and all(p["value"] is not None for p in body["points"])
    assert not any("too large" in w for w in body.get("warnings", []))  # streamed by the ingester instead
    assert client.get("/api/metrics/history/training_speed_ms?days=30").status_code == 404
