"""Reads read; the ingester writes. With the files unchanged and the ingester caught up, every GET and
HEAD (and a held stream) leaves the database exactly as it was: SQLite's `PRAGMA data_version`, seen
from another connection, changes whenever anyone commits."""
from __future__ import annotations

import json
import sqlite3

import psutil

from conftest import get_route_urls, ingest, poll

EXISTING = {"agent_id": "agent_1", "metric_name": "agent_1_quality", "filename": "app.js"}


def data_version(conn: sqlite3.Connection) -> int:
    return conn.execute("PRAGMA data_version").fetchone()[0]


def get_urls(app, **existing: str) -> list[str]:
    """Every GET route of the app, path parameters filled with things that exist."""
    return get_route_urls(app, {**EXISTING, **existing}, every=True)


def test_no_get_head_or_stream_writes_once_the_ingester_caught_up(make_app, orchestrator, tmp_path):
    app = make_app(orchestrator(), STREAM_MAX_SECONDS=2, STREAM_HEALTH_SECONDS=0.5,
                   TRAINING_COMMAND="python -c pass")
    client = app.test_client()
    project = client.post("/api/storyboard/project/create", json={"name": "exists"}).get_json()["id"]
    session = client.post("/api/training/start", json={}).get_json()["session_id"]
    poll(lambda: client.get(f"/api/training/session/{session}").get_json(),
         lambda s: s["status"] == "completed" and not psutil.pid_exists(s["pid"]))  # its wrapper wrote and left
    ingest(app)
    watcher = sqlite3.connect(app.config["DATABASE_PATH"])
    before = data_version(watcher)
    ingest(app)
    assert data_version(watcher) == before, "an ingester round with nothing new wrote"

    answers = {}
    run = client.get("/api/training/history?days=1").get_json()[0]["run_id"]  # the session's run: its output too
    for url in get_urls(app, project_id=project, session_id=str(session), run_id=run):
        for method in ("GET", "HEAD"):
            response = client.open(url, method=method)
            answers[f"{method} {url}"] = response.status_code
            if url == "/api/stream" and method == "GET":
                body = b"".join(response.response)  # the stream ends by itself after STREAM_MAX_SECONDS
                assert b"event: alert" in body and b"event: training" in body
    assert data_version(watcher) == before, json.dumps(answers, indent=1)
    assert all(status < 500 for status in answers.values()), answers
    assert answers["GET /api/dashboard/overview"] == answers["GET /readyz"] == 200
