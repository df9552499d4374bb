"""Broken, missing and hostile orchestrator files: every endpoint still answers JSON, never a 500."""
from __future__ import annotations

import os
import shutil
from datetime import datetime

import pytest

from test_api import GET_ENDPOINTS

LOG_ENDPOINTS = ("/api/system/logs", "/api/system/errors", "/api/logs/")
ALL_GETS = list(GET_ENDPOINTS) + ["/api/metrics/quality", "/api/logs/export?format=csv"]


def get_all(client) -> dict[str, object]:
    """Every GET endpoint once; asserts none is a 5xx and each is JSON or a download."""
    answers = {}
    for url in ALL_GETS:
        response = client.get(url)
        assert response.status_code < 500, (url, response.get_data(as_text=True)[:300])
        if not url.startswith(LOG_ENDPOINTS):  # those quote the orchestrator's own logged tracebacks
            assert "Traceback" not in response.get_data(as_text=True)
        assert "site-packages" not in response.get_data(as_text=True)
        answers[url] = response
    return answers


def warnings_of(response) -> list[str]:
    body = response.get_json()
    if isinstance(body, dict):
        return body.get("warnings", [])
    import json
    return json.loads(response.headers.get("X-Data-Warnings", "[]"))


@pytest.mark.parametrize("relpath,content", [
    ("logs/training_metrics.json", b'{"agent_1_quality": [{"timestamp": "2025-11-'),
    ("logs/training_metrics.json", b"[1, 2, 3]"),
    ("logs/training_metrics.json", b"\xff\xfe\x00garbage\x80"),
    ("holistic_training_result.json", b""),
    ("holistic_training_result.json", b'{"status": 5, "phases": "none", "timestamp": "yesterday"}'),
    ("training/config.json", b'{"training": {"schedule": "not a cron", "agent_training": []}}'),
    ("training/config.json", b"\xef\xbb\xbf{\"training\": {\"enabled\": \"maybe\"}}"),
])
def test_malformed_files_give_warnings_not_errors(make_app, orchestrator, relpath, content):
    root = orchestrator()
    (root / relpath).write_bytes(content)
    client = make_app(root).test_client()
    answers = get_all(client)
    overview = answers["/api/dashboard/overview"]
    assert overview.status_code == 200
    assert any(os.path.basename(relpath) in w for w in warnings_of(overview)) or relpath.startswith("training")
    status = answers["/api/status"].get_json()
    assert status["data_source"] in ("degraded", "ok")


def test_invalid_utf8_and_truncated_report(make_app, orchestrator):
    root = orchestrator()
    reports = sorted((root / "logs").glob("daily_report_*.txt"))
    newest = reports[-1]
    newest.write_bytes(newest.read_bytes()[:300] + b"\xff\xfe\xfd broken")
    log = next((root / "logs").glob("*.log"))
    stamp = f"{datetime.now():%Y-%m-%d %H:%M:%S},532".encode()  # the newest line, whatever day the history ends on
    with open(log, "ab") as fh:
        fh.write(stamp + b" - HolisticTrainer - INFO - bad bytes \xff\xfe here\n")
    client = make_app(root).test_client()
    get_all(client)
    events = client.get("/api/system/logs/recent?limit=200").get_json()
    assert any("bad bytes \ufffd\ufffd here" in e["message"] for e in events)


def test_missing_orchestrator_folder_is_reported_not_crashed(make_app, tmp_path):
    client = make_app(tmp_path / "nowhere").test_client()
    answers = get_all(client)
    overview = answers["/api/dashboard/overview"].get_json()
    assert overview["overall_quality"] is None and overview["last_training"] is None
    assert any("orchestrator folder not found" in w for w in overview["warnings"])
    assert answers["/api/agents/status"].get_json() == []
    status = answers["/api/status"].get_json()
    assert status["data_source"] == "error" and status["status"] == "error"


def test_empty_orchestrator_folder_gives_nulls(make_app, orchestrator):
    root = orchestrator(days=0)
    client = make_app(root).test_client()
    get_all(client)
    rows = client.get("/api/agents/status").get_json()
    assert rows and all(r["quality_score"] is None and r["status"] == "offline" for r in rows)
    assert client.get("/api/training/history?days=30").get_json() == []


def test_symlink_out_of_the_root_is_not_followed(make_app, orchestrator, tmp_path):
    root = orchestrator()
    secret = tmp_path / "secret.json"
    secret.write_text('{"training": {"schedule": "1 1 1 1 1", "enabled": true}}', encoding="utf-8")
    config = root / "training" / "config.json"
    config.unlink()
    config.symlink_to(secret)
    body = make_app(root).test_client().get("/api/training/schedule").get_json()
    assert body["schedule"] is None
    assert any("config.json" in w for w in body["warnings"])


def test_fifo_in_place_of_a_file_does_not_block(make_app, orchestrator):
    root = orchestrator()
    result = root / "holistic_training_result.json"
    result.unlink()
    os.mkfifo(result)
    body = make_app(root).test_client().get("/api/dashboard/overview").get_json()
    assert body["last_training"] is None
    assert any("holistic_training_result.json" in w for w in body["warnings"])


def test_deleted_logs_folder(make_app, orchestrator):
    root = orchestrator()
    shutil.rmtree(root / "logs")
    client = make_app(root).test_client()
    get_all(client)
    assert client.get("/api/system/logs/recent").get_json() == []


def test_an_unknown_metric_says_what_could_not_be_read(make_app, orchestrator):
    """With the metrics file unreadable (and nothing recorded from it), a metric's history is a 404 that
    names the unreadable file, so the user sees why the metric is unknown."""
    root = orchestrator()
    (root / "logs" / "training_metrics.json").write_bytes(b"\xff\xfe{broken")
    response = make_app(root).test_client().get("/api/metrics/history/no_such_metric")
    assert response.status_code == 404
    assert any("training_metrics.json" in w for w in response.get_json()["warnings"])
