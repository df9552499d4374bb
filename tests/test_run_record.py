"""Each training run's own record: one run id in the history for cron runs and dashboard sessions alike,
stable across a restart and a re-ingest into a new database; GET /api/training/runs/<run_id> with the
phases, agents and errors the run log shows; dashboard sessions numbered from 1 (also after migration 7);
the record through the cloud proxy to a real upstream."""
from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from pydantic import TypeAdapter
from werkzeug.serving import make_server

import database
from app import create_app
from conftest import ORCHESTRATOR, ingest, poll
from dashboard.contract import TrainingRunRecord
from dashboard.store.migrations import MIGRATIONS
from servers import free_port
from test_training_control import control, start  # noqa: F401 (a fixture)

SCHEMA_V1 = Path(__file__).with_name("fixtures") / "schema_v1.sql"
RUN_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
PHASE_KEYS = {"Data Harvesting": "harvesting", "Data Validation": "validation", "Agent Training": "agent_training",
              "Production Run": "production", "Monitoring & Logging": "monitoring", "Cleanup & Archiving": "cleanup"}
LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} - \S+ - ([A-Z]+) - (.*)$")


def logged_runs(root) -> list[dict]:
    """Each run of the fixture's log, oldest first, as its lines say: phases started, agents named, and
    WARNING/ERROR lines (a traceback's lines joined to the line before them)."""
    runs, last = [], None
    for line in (root / "logs" / "holistic_training.log").read_text(encoding="utf-8").splitlines():
        m = LINE.match(line)
        if m is None:
            if last is not None:
                last["message"] += "\n" + line
            continue
        level, message = m.groups()
        if message == "HOLISTIC TRAINING PIPELINE STARTED":
            runs.append({"phases": [], "agents": [], "errors": []})
        run, last = runs[-1], None
        if phase := re.match(r"Phase \d+: (.+) - START$", message):
            run["phases"].append(PHASE_KEYS[phase.group(1)])
        agent = re.match(r"Training (agent_\w+) \(", message) or re.match(r"No training data for (agent_\w+)", message)
        if agent and agent.group(1) not in run["agents"]:
            run["agents"].append(agent.group(1))
        if level in ("WARNING", "ERROR", "CRITICAL"):
            last = {"level": level, "message": message}
            run["errors"].append(last)
    return runs


def record(client, run_id: str) -> dict:
    response = client.get(f"/api/training/runs/{run_id}")
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    TypeAdapter(TrainingRunRecord).validate_python(body)
    return body


def history(client, days: int = 30) -> list[dict]:
    return client.get(f"/api/training/history?days={days}").get_json()


def test_every_run_of_the_history_resolves_to_what_its_log_says(make_app, orchestrator):
    root = orchestrator()
    app = make_app(root)
    client = app.test_client()
    env = {**os.environ, "ORCHESTRATOR_TIME_SCALE": "0.05", "ORCHESTRATOR_FAIL": "1"}
    failed = subprocess.run([sys.executable, str(ORCHESTRATOR), "train", "--root", str(root)], env=env,
                            capture_output=True, text=True, timeout=60)
    assert failed.returncode == 1, failed.stderr[-2000:]
    ingest(app)

    runs, logged = history(client), logged_runs(root)
    assert len(runs) == len(logged) == 15 and runs[0]["status"] == "failed"
    assert all(RUN_ID.match(run["run_id"]) and run["session_id"] is None for run in runs)
    assert len({run["run_id"] for run in runs}) == len(runs)
    for index, (run, expected) in enumerate(zip(reversed(runs), logged)):
        body = record(client, run["run_id"])
        assert {k: body[k] for k in ("run_id", "origin", "session_id", "status", "started_at", "finished_at",
                                     "duration_seconds", "overall_quality")} == {
            k: run[k] for k in ("run_id", "origin", "session_id", "status", "started_at", "finished_at",
                                "duration_seconds", "overall_quality")}
        assert [p["name"] for p in body["phases"]] == expected["phases"], run
        assert [a["id"] for a in body["agents"]] == expected["agents"], run
        assert [{k: e[k] for k in ("level", "message")} for e in body["errors"]] == expected["errors"], run
        assert body["output_tail"] is None
        assert not [w for w in body["warnings"] if "none of its lines" in w]
        assert (body["previous"] or {}).get("run_id") == (runs[-index]["run_id"] if index else None)
        if run["status"] == "completed":
            assert {p["status"] for p in body["phases"]} == {"completed"} and len(body["phases"]) == 6
            done = [a for a in body["agents"] if a["status"] == "completed"]
            assert done and all(a["quality_after"] is not None and a["processing_time_ms"] for a in done)
            assert all(a["error"] for a in body["agents"] if a["status"] in ("failed", "skipped"))
        else:
            assert run["status"] == "failed" and body["phases"][-1]["status"] == "failed", body["phases"]
            assert body["errors"][-1]["level"] == "ERROR" and "Traceback" in body["errors"][-1]["message"]
    newest = record(client, runs[0]["run_id"])
    assert [p["name"] for p in newest["phases"]] == ["harvesting", "validation"] and newest["agents"] == []
    changes = newest["previous"]["phase_duration_change"]
    assert changes["harvesting"] is not None and changes["validation"] is None  # it never completed validation


def test_a_run_whose_log_lines_are_gone_says_why_its_phases_are_empty(make_app, orchestrator):
    root = orchestrator()
    app = make_app(root)
    client = app.test_client()
    ingest(app)  # the runs are recorded; then the logs rotate away
    run_id = history(client)[-1]["run_id"]
    assert record(client, run_id)["phases"]
    for log in (root / "logs").glob("*.log"):
        log.unlink()
    body = record(client, run_id)
    assert (body["run_id"], body["phases"], body["agents"], body["errors"]) == (run_id, [], [], [])
    assert [w for w in body["warnings"] if run_id in w and "none of its lines are in the run logs" in w]


def test_run_ids_are_the_same_after_a_restart_and_a_reingest_into_a_new_database(make_app, orchestrator, tmp_path):
    root = orchestrator()
    first = make_app(root).test_client()
    ids = [run["run_id"] for run in history(first)]
    restarted = make_app(root).test_client()
    fresh = make_app(root, DATABASE_PATH=tmp_path / "again.sqlite").test_client()
    assert [run["run_id"] for run in history(restarted)] == [run["run_id"] for run in history(fresh)] == ids
    assert len(set(ids)) == len(ids) == 14
    for run_id in ids[:3]:
        assert {**record(fresh, run_id), "warnings": []} == {**record(first, run_id), "warnings": []}


def test_sessions_are_numbered_from_one_and_an_orchestrator_run_is_no_session(make_app, orchestrator):
    client = make_app(orchestrator()).test_client()
    runs = history(client)
    assert len(runs) == 14 and {run["origin"] for run in runs} == {"orchestrator"}
    for number in (1, 14, 15):
        missing = client.get(f"/api/training/session/{number}")
        assert missing.status_code == 404 and missing.get_json()["error"] == f"unknown session_id: {number}"
    unknown = client.get("/api/training/runs/20000101T000000Z")
    assert unknown.status_code == 404 and unknown.get_json() == {"error": "unknown run_id: 20000101T000000Z",
                                                                 "status": 404}
    for bad in ("bad%21id", "x" * 65, ".."):
        invalid = client.get(f"/api/training/runs/{bad}")
        assert invalid.status_code in (400, 404) and invalid.get_json()["status"] == invalid.status_code
    assert client.get("/api/training/runs/bad%21id").status_code == 400


def test_a_dashboard_stopped_run_is_session_one_with_its_output_and_the_run_before_it(control, monkeypatch):  # noqa: F811
    monkeypatch.setenv("ORCHESTRATOR_TIME_SCALE", "5")  # slow: it is stopped in its first phase
    app, client, root = control(TRAINING_STOP_GRACE_SECONDS=5)
    started = start(client)
    assert started["session_id"] == 1
    poll(lambda: client.get("/api/training/status").get_json(), lambda s: s["current_phase"] == "harvesting", 20)
    stopped = client.post("/api/training/stop")
    assert stopped.status_code == 200 and (stopped.get_json()["session_id"], stopped.get_json()["status"]) == (1, "stopped")
    ingest(app)

    runs = history(client, 2)
    mine = [run for run in runs if run["session_id"] == 1]
    assert [(r["origin"], r["status"]) for r in mine] == [("dashboard", "stopped")] and runs[0] == mine[0]
    body = record(client, mine[0]["run_id"])
    assert (body["session_id"], body["origin"], body["status"]) == (1, "dashboard", "stopped")
    # no key exists: started and stopped by anonymous; a run from the files by nobody known
    assert (body["started_by"], body["stopped_by"]) == (mine[0]["started_by"], mine[0]["stopped_by"]) == ("anonymous",) * 2
    assert (runs[1]["started_by"], runs[1]["stopped_by"]) == (None, None)
    assert [(p["name"], p["status"]) for p in body["phases"]] == [("harvesting", "stopped")]
    assert [{k: e[k] for k in ("level", "message")} for e in body["errors"]] == logged_runs(root)[-1]["errors"]
    assert body["errors"] and "interrupted by signal SIGTERM" in body["errors"][-1]["message"]
    assert 0 < len(body["output_tail"]) <= 100 and any("Data Harvesting" in line for line in body["output_tail"])
    assert body["previous"]["run_id"] == runs[1]["run_id"] and body["previous"]["status"] == "completed"
    assert client.get("/api/training/session/1").get_json()["status"] == "stopped"

    again = app.test_client()  # the same database read by a new app: the same id for the session's run
    assert [r["run_id"] for r in history(again, 2) if r["session_id"] == 1] == [mine[0]["run_id"]]


@pytest.fixture
def upstream(make_app, orchestrator, monkeypatch):
    """A local app over the example history, served over HTTP on 127.0.0.1 as a cloud instance would be."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    local = make_app(orchestrator())
    server = make_server("127.0.0.1", free_port(), local, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield local, f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join()


def test_the_cloud_proxy_forwards_the_record(upstream, tmp_path):
    local, url = upstream
    cloud = create_app({"TESTING": True, "ENVIRONMENT": "cloud", "CLOUD_API_URL": url, "CLOUD_API_KEY": "k" * 32,
                        "CLOUD_ALLOW_INSECURE_HTTP": True, "CLOUD_CACHE_SECONDS": 0, "RESPONSE_CACHE_SECONDS": 0,
                        "ORCHESTRATOR_PATH": tmp_path / "absent", "DATABASE_PATH": tmp_path / "cloud.sqlite",
                        "LOG_FILE": None, "HEALTH_SAMPLE_SECONDS": 0, "TRAINING_RUNS_DIR": tmp_path / "cloud-runs"})
    try:
        client, direct = cloud.test_client(), local.test_client()
        runs = history(client)
        assert runs == history(direct)
        for run in (runs[0], runs[-1]):
            assert record(client, run["run_id"]) == record(direct, run["run_id"])
        for path, status in (("20000101T000000Z", 404), ("bad%21id", 400)):
            answer = client.get(f"/api/training/runs/{path}")
            assert answer.status_code == status and answer.get_json()["status"] == status
    finally:
        cloud.extensions["provider"].client.close()


def test_migration_7_numbers_the_dashboard_sessions_from_one(tmp_path):
    db = tmp_path / "v6.sqlite"
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.executescript(SCHEMA_V1.read_text(encoding="utf-8"))
        for step in MIGRATIONS[:5]:
            conn.executescript(step)
        conn.execute("PRAGMA user_version = 6")
        rows = [("orchestrator", "2026-01-01T03:00:01Z", "2026-01-01T03:00:30Z"),
                ("dashboard", "2026-01-01T10:00:00Z", "2026-01-01T10:00:40Z"),
                ("orchestrator", "2026-01-02T03:00:01Z", "2026-01-02T03:00:30Z"),
                ("dashboard", "2026-01-02T03:00:01Z", None), ("dashboard", None, None)]
        conn.executemany("INSERT INTO training_sessions (origin, start_time, end_time, status) VALUES (?, ?, ?, 'completed')",
                         rows)
        conn.commit()
    assert database.migrate(db) == 6
    with contextlib.closing(sqlite3.connect(db)) as conn:
        got = conn.execute("SELECT origin, session_number, run_id FROM training_sessions ORDER BY id").fetchall()
    assert got == [("orchestrator", None, "20260101T030001Z"), ("dashboard", 1, "20260101T100000Z"),
                   ("orchestrator", None, "20260102T030001Z"), ("dashboard", 2, "20260102T030001Z.2"),
                   ("dashboard", 3, None)]
