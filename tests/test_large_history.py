"""A metrics file too large to read per request (months of points every quarter hour) answers what the same recent
history in a small file answers: the ingester streams it into SQLite, reads take it from there."""
from __future__ import annotations

import json
import tracemalloc
import shutil
import sqlite3
from datetime import datetime, timedelta

import pytest

import data_loader
from conftest import ingest

SAME_ANSWERS = ["/api/training/history?days=7", "/api/training/history?days=14", "/api/agents/status",
                "/api/metrics/quality?days=14", "/api/metrics/trends?days=14", "/api/metrics/comparison",
                "/api/agents/health", "/api/system/alerts", "/api/dashboard/quick-stats"]


def metrics_path(root):
    return root / "logs" / "training_metrics.json"


def pad_with_old_points(root, target_bytes: int) -> int:
    """Put points every quarter hour, from 360 days ago on, in front of every series until the file passes
    `target_bytes` (well before the last 14 days; scores above any threshold, so no alert reaches back to
    them); the old runs go into training_history too. Returns how many points were added."""
    path = metrics_path(root)
    metrics = json.loads(path.read_text(encoding="utf-8"))
    start = datetime.now().replace(microsecond=0) - timedelta(days=360)

    def step_of_points(step: int) -> dict:
        stamp = (start + timedelta(minutes=15 * step)).isoformat(timespec="microseconds")
        points = {}
        for key in metrics:
            if key == "training_history":
                points[key] = {"timestamp": stamp, "event_type": "holistic_training_complete",
                               "data": {"status": "success", "total_time_seconds": 20.0, "agents_trained": 6}}
            elif key in ("success_rate", "training_speed_ms"):
                points[key] = {"timestamp": stamp, "agent": "agent_1", "success": True, "time_ms": 900}
            else:
                points[key] = {"timestamp": stamp, "score": 9.9, "improvement": 0.1, "time_ms": 900}
        return points

    steps = target_bytes // len(json.dumps(list(step_of_points(0).values()), indent=2)) + 1
    assert steps / 4 < (360 - 14) * 24, "the old points would reach the last 14 days"
    old = {key: [] for key in metrics}
    for step in range(steps):
        for key, point in step_of_points(step).items():
            old[key].append(point)
    path.write_text(json.dumps({k: old[k] + metrics[k] for k in metrics}, indent=2), encoding="utf-8")
    assert path.stat().st_size > target_bytes
    return steps * len(metrics)


def stored_points(db) -> int:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT COUNT(*) FROM metrics WHERE source = 'training_metrics'").fetchone()[0]


@pytest.fixture(scope="module")
def large_root(tmp_path_factory, _built):
    root = tmp_path_factory.mktemp("large") / "orchestrator"
    shutil.copytree(_built(None, 14), root)
    pad_with_old_points(root, int(data_loader.MAX_FILE_BYTES * 2.2))  # torn in half, still over the cap
    return root


def test_a_metrics_file_over_the_read_cap_answers_as_a_small_one(make_app, orchestrator, large_root, tmp_path):
    small = make_app(orchestrator(), DATABASE_PATH=tmp_path / "small.sqlite").test_client()
    large_app = make_app(large_root, DATABASE_PATH=tmp_path / "large.sqlite")
    large = large_app.test_client()
    for url in SAME_ANSWERS:
        assert large.get(url).get_json() == small.get(url).get_json(), url
    overview = large.get("/api/dashboard/overview").get_json()
    assert overview == small.get("/api/dashboard/overview").get_json()
    assert set(overview["improvements"]) == {a["id"] for a in large.get("/api/agents/status").get_json()}
    assert len(large.get("/api/training/history?days=7").get_json()) >= 6  # a run a day, one may be the failed one
    old = large.get("/api/metrics/history/agent_1_quality?days=365").get_json()
    assert old["points"] and not any("too large" in w for w in old.get("warnings", []))
    years = large.get("/api/training/history?days=365").get_json()
    assert len(years) > len(small.get("/api/training/history?days=365").get_json())  # the file's old runs


def test_a_torn_metrics_file_mid_ingest_loses_no_stored_point(make_app, large_root, tmp_path):
    root = tmp_path / "orchestrator"
    shutil.copytree(large_root, root)
    full = metrics_path(root).read_bytes()
    metrics_path(root).write_bytes(full[: len(full) // 2])  # the orchestrator caught rewriting it in place
    # In UTC every padding point is its own instant (in a zone with DST some local times do not exist).
    app = make_app(root, ORCHESTRATOR_TIMEZONE="UTC")
    halfway = stored_points(app.config["DATABASE_PATH"])
    assert halfway > 0  # what the torn half holds is recorded
    overview = app.test_client().get("/api/dashboard/overview").get_json()
    assert any("still being recorded" in w for w in overview["warnings"])
    last = [k for k in json.loads(full) if k != "training_history"][-1]
    with sqlite3.connect(app.config["DATABASE_PATH"]) as conn:
        assert not conn.execute("SELECT 1 FROM metrics WHERE metric_type = ?", (last,)).fetchone()  # not reached
    pending = app.test_client().get(f"/api/metrics/history/{last}")
    assert pending.status_code == 200, pending.get_json()  # not an "unknown metric" while it is being recorded
    assert pending.get_json()["points"] == [] and any("still being recorded" in w for w in pending.get_json()["warnings"])

    metrics_path(root).write_bytes(full[: len(full) // 3])  # torn again, shorter
    ingest(app)
    assert stored_points(app.config["DATABASE_PATH"]) == halfway  # nothing recorded is lost

    metrics_path(root).write_bytes(full)
    ingest(app)
    total = sum(len(v) for k, v in json.loads(full).items() if k != "training_history")
    assert stored_points(app.config["DATABASE_PATH"]) == total
    overview = app.test_client().get("/api/dashboard/overview").get_json()
    assert not any("still being recorded" in w for w in overview["warnings"])
    before = stored_points(app.config["DATABASE_PATH"])
    ingest(app)  # a round with the file unchanged records nothing again
    assert stored_points(app.config["DATABASE_PATH"]) == before


def logged_events(db) -> list[str]:
    with sqlite3.connect(db) as conn:
        return [r[0] for r in conn.execute(
            "SELECT message FROM events WHERE event_type = 'orchestrator_log' ORDER BY id")]


def test_the_log_is_recorded_from_where_the_last_round_stopped(make_app, orchestrator):
    root = orchestrator()
    log = root / "logs" / "holistic_training.log"
    line = "2026-01-05 03:00:00,000 - HolisticTrainer - {} - {}\n"
    filler = line.format("INFO", "x" * 200) * (2 * data_loader.TAIL_MAX_BYTES // 200)  # past the tail window
    log.write_text(line.format("ERROR", "early failure") + filler, encoding="utf-8")
    app = make_app(root)
    assert logged_events(app.config["DATABASE_PATH"]) == ["early failure"]  # not only the tail

    with log.open("a", encoding="utf-8") as handle:
        handle.write(line.format("WARNING", "later warning"))
        handle.write(line.format("ERROR", "half written").rstrip("\n")[:-3])  # no newline yet
    ingest(app)
    assert logged_events(app.config["DATABASE_PATH"]) == ["early failure", "later warning"]
    with log.open("a", encoding="utf-8") as handle:
        handle.write("ten\n")
    ingest(app)
    assert logged_events(app.config["DATABASE_PATH"])[-1] == "half written"

    log.write_text(line.format("CRITICAL", "after a truncation"), encoding="utf-8")  # smaller: read from 0
    ingest(app)
    assert logged_events(app.config["DATABASE_PATH"])[-1] == "after a truncation"
    assert len(logged_events(app.config["DATABASE_PATH"])) == 4


def test_a_50_mb_line_is_skipped_with_a_warning_and_the_events_around_it_are_kept(make_app, orchestrator):
    # plan T27: a line longer than the tail window (and than MAX_LINE_BYTES) hides nothing before it
    root = orchestrator()
    log = root / "logs" / "holistic_training.log"
    line = "2026-01-05 03:00:{:02d},000 - HolisticTrainer - {} - {}\n"
    huge = line.format(1, "ERROR", "y" * (50 * 1024 * 1024)).encode()
    with log.open("wb") as handle:
        handle.write(line.format(0, "ERROR", "before the long line").encode())
        handle.write(huge)
        handle.write(line.format(2, "WARNING", "after the long line").encode())
    tracemalloc.start()
    try:
        app = make_app(root)  # its first ingest reads the whole log
        client = app.test_client()
        errors = client.get("/api/system/errors?limit=50")
        recent = client.get("/api/system/logs/recent?limit=50")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * 1024 * 1024, peak  # the 50 MB line was never held whole

    assert logged_events(app.config["DATABASE_PATH"]) == ["before the long line", "after the long line"]
    skipped = f"holistic_training.log: skipped a line of {len(huge) - 1} bytes at byte 73"
    for response in (errors, recent):
        assert response.status_code == 200
        messages = [e["message"] for e in response.get_json()]
        assert "before the long line" in messages and "after the long line" in messages
        assert not any(m.startswith("y" * 100) for m in messages)
        assert any(w.startswith(skipped) for w in json.loads(response.headers["X-Data-Warnings"])), response.headers
        assert any(m.startswith(skipped) for m in messages)  # the ingester's warning, as an event

    with log.open("ab") as handle:
        handle.write(line.format(3, "ERROR", "later still").encode())
    ingest(app)
    assert logged_events(app.config["DATABASE_PATH"])[-1] == "later still"
    with sqlite3.connect(app.config["DATABASE_PATH"]) as conn:
        assert conn.execute("SELECT COUNT(*) FROM events WHERE event_type = 'log_line_skipped'").fetchone()[0] == 1
