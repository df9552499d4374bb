"""Reads share what did not change: the files' parse and the database's reads are kept between requests,
and every change still shows in the next answer that depends on it.

A change of a file the view watches (config, result, metrics, the newest log and reports, the folders)
shows at once; a report further back rewritten in place shows once the ingester has recorded it; a
commit by any other connection (the ingester, another worker) shows at once.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
from contextlib import closing

import database
from conftest import ingest
from dashboard.timestamps import utc_now

QUALITY = "/api/metrics/quality?days=30"


def system_quality(client, day: str):
    body = client.get(QUALITY).get_json()
    return dict(zip(body["timestamps"], body["system"])).get(day)


def rewrite_report(path, score: float) -> None:
    text = re.sub(r"Overall System Quality:\s*[0-9.]+/10", f"Overall System Quality: {score}/10",
                  path.read_text(encoding="utf-8"))
    path.write_text(text, encoding="utf-8")


def test_a_report_further_back_rewritten_in_place_shows_once_recorded(make_app, orchestrator):
    root = orchestrator()
    os.unlink(root / "logs" / "training_metrics.json")  # so each day's score is its report's
    reports = sorted((root / "logs").glob("daily_report_*.txt"))
    old = reports[-8]  # not among the newest, whose own change is watched
    day = old.name.removeprefix("daily_report_").removesuffix(".txt")
    client = make_app(root).test_client()
    assert system_quality(client, day) != 1.25
    rewrite_report(old, 1.25)
    ingest(client.application)
    assert system_quality(client, day) == 1.25


def test_a_change_of_the_config_shows_at_once(make_app, orchestrator):
    root = orchestrator()
    client = make_app(root).test_client()
    assert client.get("/api/training/schedule").get_json()["schedule"] == "0 3 * * *"
    config_path = root / "training" / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["training"]["schedule"] = "15 4 * * *"
    config_path.write_text(json.dumps(config), encoding="utf-8")
    assert client.get("/api/training/schedule").get_json()["schedule"] == "15 4 * * *"  # no ingest between


def test_the_newest_report_rewritten_shows_at_once(make_app, orchestrator):
    root = orchestrator()
    newest = sorted((root / "logs").glob("daily_report_*.txt"))[-1]
    day = newest.name.removeprefix("daily_report_").removesuffix(".txt")
    client = make_app(root).test_client()
    os.unlink(root / "logs" / "training_metrics.json")  # so each day's score is its report's
    assert system_quality(client, day) != 2.5
    rewrite_report(newest, 2.5)
    assert system_quality(client, day) == 2.5


def test_a_commit_by_another_connection_shows_at_once(make_app, orchestrator, tmp_path):
    client = make_app(orchestrator()).test_client()
    before = client.get("/api/training/history?days=30").get_json()
    with closing(database.connect(tmp_path / "db.sqlite")) as other, database.transaction(other):
        other.execute("INSERT INTO training_sessions (run_key, status, origin, start_time, end_time, error_message)"
                      " VALUES ('2099-01-01T00:00:00Z', 'failed', 'orchestrator', ?, ?, 'recorded elsewhere')",
                      (utc_now(), utc_now()))
    after = client.get("/api/training/history?days=30").get_json()
    assert len(after) == len(before) + 1
    assert [r for r in after if r["error"] == "recorded elsewhere"]


def test_a_replaced_database_file_is_read_as_the_new_file(make_app, orchestrator, tmp_path):
    client = make_app(orchestrator()).test_client()
    created = client.post("/api/storyboard/project/create", json={"name": "kept", "scenes": []})
    assert created.status_code == 201
    assert [p["name"] for p in client.get("/api/storyboard/projects").get_json()] == ["kept"]
    db = tmp_path / "db.sqlite"
    fresh = tmp_path / "fresh.sqlite"
    database.migrate(fresh)
    with closing(sqlite3.connect(fresh)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    for suffix in ("-wal", "-shm"):
        if os.path.exists(f"{db}{suffix}"):
            os.unlink(f"{db}{suffix}")
    shutil.copy(fresh, f"{db}.new")
    os.replace(f"{db}.new", db)  # a restore from backup: a new file under the same name
    assert client.get("/api/storyboard/projects").get_json() == []


def test_an_answer_computed_while_the_database_failed_is_not_kept(make_app, orchestrator, monkeypatch, tmp_path):
    """A read that fails once (forced: nothing real fails a read while the version stays readable) gives
    an answer with a warning, and the next request reads the history again rather than reusing it."""
    from dashboard.store import history_reads
    root = orchestrator()
    os.unlink(root / "logs" / "training_metrics.json")
    reports = sorted((root / "logs").glob("daily_report_*.txt"))
    old = reports[-8]
    day = old.name.removeprefix("daily_report_").removesuffix(".txt")
    client = make_app(root).test_client()
    rewrite_report(old, 1.25)
    ingest(client.application)
    old.unlink()  # the day is now in the database alone
    assert system_quality(client, day) == 1.25
    real = history_reads.daily_quality
    failures = []

    def failing_once(*args, **kwargs):
        if not failures:
            failures.append(1)
            raise sqlite3.OperationalError("disk I/O error")
        return real(*args, **kwargs)

    monkeypatch.setattr(history_reads, "daily_quality", failing_once)
    with closing(database.connect(tmp_path / "db.sqlite")) as other, database.transaction(other):
        other.execute("INSERT INTO cache_generations (prefix, value) VALUES ('/elsewhere', 1)")  # any commit
    failed = client.get(QUALITY).get_json()
    assert any("database unavailable" in w for w in failed["warnings"])
    assert system_quality(client, day) == 1.25
    assert not any("database unavailable" in w for w in client.get(QUALITY).get_json()["warnings"])


def test_concurrent_requests_while_the_files_change_all_get_answers(make_app, orchestrator):
    """Requests of one worker share the parsed view and its locks: eight threads asking every reading
    endpoint while the metrics file is rewritten all finish (none waits on another forever)."""
    import threading
    import time

    root = orchestrator()
    app = make_app(root)
    metrics = root / "logs" / "training_metrics.json"
    original = metrics.read_bytes()
    urls = ["/api/metrics/trends?days=30", "/api/metrics/quality?days=30", "/api/agents/status",
            "/api/agents/agent_1", "/api/dashboard/overview", "/api/training/status", "/api/metrics/comparison",
            "/api/metrics/history/system_overall_quality"]
    statuses, stop = [], threading.Event()

    def ask(offset: int) -> None:
        client = app.test_client()
        for i in range(60):
            statuses.append(client.get(urls[(offset + i) % len(urls)]).status_code)

    def rewrite() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            metrics.write_bytes(original.replace(b'"score": ', b'"score": ' if n % 2 else b'"score":  ', 1))

    writer = threading.Thread(target=rewrite, daemon=True)
    threads = [threading.Thread(target=ask, args=(k,), daemon=True) for k in range(16)]
    writer.start()
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 120  # a liveness bound, not a duration: they finish in seconds, or never
    for thread in threads:
        thread.join(timeout=max(0.0, deadline - time.monotonic()))
    stop.set()
    writer.join(timeout=10)
    assert not any(thread.is_alive() for thread in threads), "requests waiting on each other"
    assert len(statuses) == 16 * 60 and set(statuses) == {200}
