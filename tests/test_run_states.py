"""Training runs in honest states: a dashboard stop is `stopped` (no failure alert), a failed run is
`failed`, the last successful run stays the reference for durations and the ETA, a run is `starting`
before its first phase, and every day series has every day of its window."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from conftest import ORCHESTRATOR, OTHER_AGENTS, SEED, ingest, poll, run_orchestrator
from dashboard.local.runs import runs_history
from test_training_control import control, db_rows, finished, py, start, wait_for_output  # noqa: F401 (a fixture)

PHASE_NAMES = ("Data Harvesting", "Data Validation", "Agent Training", "Production Run", "Monitoring & Logging",
               "Cleanup & Archiving")
ENDED = ["HOLISTIC TRAINING PIPELINE STARTED"] + [f"Phase {n}: {name} - {step}" for n, name in enumerate(PHASE_NAMES, 1)
                                                 for step in ("START", "COMPLETE (1.00s, done)")] + [
    "Holistic training completed successfully"]


def logs_then_waits(messages: list[str]) -> str:
    """A TRAINING_COMMAND that writes `messages` to the run log as the orchestrator does, then waits."""
    return py("import datetime, time\n"
              "stamp = datetime.datetime.now().strftime('%Y-%m-%d %H:%M:%S,000')\n"
              "with open('logs/holistic_training.log', 'a') as log:\n"
              f"    for message in {messages!r}:\n"
              "        log.write(f'{stamp} - HolisticTrainer - INFO - {message}\\n')\n"
              "print('ready', flush=True)\n"
              "time.sleep(120)\n")


def reference(client) -> dict:
    """What the last successful run says: its phase durations, agents trained and training speed."""
    status, overview = client.get("/api/training/status").get_json(), client.get("/api/dashboard/overview").get_json()
    return {"phase_durations": status["phase_durations"], "agents_trained": overview["agents_trained"],
            "training_speed_ms": overview["training_speed_ms"]}


def alert_ids(client) -> set[str]:
    return {a["id"] for a in client.get("/api/system/alerts").get_json()}


def result_status(root) -> str:
    return json.loads((root / "holistic_training_result.json").read_text(encoding="utf-8"))["status"]


def begin_run_in_log(root) -> None:
    """Write the lines the orchestrator writes as a run starts its first phase, stamped now."""
    stamp = datetime.now().strftime("%Y-%m-%d %H:%M:%S,000")
    with open(root / "logs" / "holistic_training.log", "a", encoding="utf-8") as log:
        for message in ("HOLISTIC TRAINING PIPELINE STARTED", "Phase 1: Data Harvesting - START"):
            log.write(f"{stamp} - HolisticTrainer - INFO - {message}\n")


def assert_weighed_by(client, before: dict) -> None:
    """The run the log shows going is weighed by the last successful run: an ETA, a percent below 100."""
    status = client.get("/api/training/status").get_json()
    assert (status["is_running"], status["current_phase"]) == (True, "harvesting"), status
    assert status["estimated_time_remaining_sec"] is not None and status["estimated_time_remaining_sec"] > 0
    assert status["progress_percent"] < 100
    assert status["phase_durations"] == before["phase_durations"]


def test_a_dashboard_stop_is_stopped_everywhere_and_raises_no_failure_alert(control, monkeypatch):  # noqa: F811
    monkeypatch.setenv("ORCHESTRATOR_TIME_SCALE", "5")  # slow: it is stopped in its first phase
    app, client, root = control(TRAINING_STOP_GRACE_SECONDS=5)
    before = reference(client)
    assert result_status(root) == "success" and None not in before["phase_durations"].values()
    assert before["agents_trained"] is not None and before["training_speed_ms"] is not None
    sid = start(client)["session_id"]
    poll(lambda: client.get("/api/training/status").get_json(), lambda s: s["current_phase"] == "harvesting", 20)

    stopped = client.post("/api/training/stop")
    assert stopped.status_code == 200
    assert (stopped.get_json()["status"], stopped.get_json()["exit_code"]) == ("stopped", 143)
    assert result_status(root) == "failed"  # the orchestrator's word: "interrupted by signal SIGTERM"
    assert "training.last_run_failed" not in alert_ids(client)
    ingest(app)
    assert "training.last_run_failed" not in alert_ids(client)
    assert not db_rows(app, "SELECT id FROM events WHERE message LIKE '%last training run%'")
    ended = db_rows(app, "SELECT severity, message FROM events WHERE event_type = 'training_stopped'")
    assert [(e["severity"], "training run stopped from the dashboard" in e["message"]) for e in ended] == [("info", True)]

    history = client.get("/api/training/history?days=2").get_json()
    mine = [r for r in history if r["started_at"] >= stopped.get_json()["started_at"]]
    assert [(r["status"], r["session_id"]) for r in mine] == [("stopped", sid)], mine
    assert reference(client) == before

    # A later run (cron, by hand: no session) is weighed by the run before the stop.
    ended_at = datetime.fromisoformat(stopped.get_json()["ended_at"].replace("Z", "+00:00"))
    poll(lambda: datetime.now(timezone.utc).replace(microsecond=0), lambda now: now > ended_at, 5)
    begin_run_in_log(root)
    assert_weighed_by(client, before)


def test_a_failed_run_raises_the_alert_and_keeps_the_last_success_as_reference(make_app, orchestrator):
    root = orchestrator()
    app = make_app(root)
    client = app.test_client()
    before = reference(client)
    assert result_status(root) == "success" and None not in before["phase_durations"].values()
    env = {**os.environ, "ORCHESTRATOR_TIME_SCALE": "0.05", "ORCHESTRATOR_FAIL": "1"}
    failed = subprocess.run([sys.executable, str(ORCHESTRATOR), "train", "--root", str(root)], env=env,
                            capture_output=True, text=True, timeout=60)
    assert failed.returncode == 1, failed.stderr[-2000:]
    assert result_status(root) == "failed"

    ingest(app)
    alerts = {a["id"]: a for a in client.get("/api/system/alerts").get_json()}
    assert alerts["training.last_run_failed"]["severity"] == "critical"
    assert client.get("/api/training/history?days=1").get_json()[0]["status"] == "failed"
    assert reference(client) == before
    begin_run_in_log(root)
    assert_weighed_by(client, before)


def test_a_run_is_starting_until_the_log_shows_its_first_phase(control):  # noqa: F811
    app, client, root = control(TRAINING_COMMAND=logs_then_waits(["HOLISTIC TRAINING PIPELINE STARTED"]))
    sid = start(client)["session_id"]
    first = client.get("/api/training/status").get_json()
    assert (first["is_running"], first["current_phase"], first["session_id"]) == (True, "starting", sid)
    assert client.get("/api/dashboard/overview").get_json()["current_phase"] == "starting"
    assert client.get("/api/dashboard/quick-stats").get_json()["training_running"] is True
    stream = client.get("/api/stream", buffered=False)
    try:
        frame = next(chunk for chunk in stream.response if chunk.startswith(b"event: training"))
    finally:
        stream.close()
    assert json.loads(frame.split(b"data: ", 1)[1])["current_phase"] == "starting"

    wait_for_output(app.config["TRAINING_RUNS_DIR"] / str(sid) / "output.log", "ready")  # its run is in the log
    status = client.get("/api/training/status").get_json()
    assert (status["is_running"], status["current_phase"], status["current_agent"]) == (True, "starting", None)
    assert client.post("/api/training/stop").status_code == 200
    assert finished(client, sid)["status"] == "stopped"
    assert client.get("/api/training/status").get_json()["current_phase"] == "idle"


def test_a_run_the_log_shows_ended_is_not_starting_while_its_end_is_recorded(control):  # noqa: F811
    app, client, root = control(TRAINING_COMMAND=logs_then_waits(ENDED))
    sid = start(client)["session_id"]
    wait_for_output(app.config["TRAINING_RUNS_DIR"] / str(sid) / "output.log", "ready")
    status = client.get("/api/training/status").get_json()
    assert (status["is_running"], status["current_phase"], status["session_id"]) == (True, "cleanup", sid)
    assert client.get("/api/dashboard/overview").get_json()["current_phase"] == "cleanup"
    assert client.post("/api/training/stop").status_code == 200


ZONE = "Pacific/Kiritimati"  # UTC+14: its today is not UTC's for most of the day


@pytest.mark.parametrize("backfill_days", [0, 2], ids=["freshly-initialised", "days-without-a-score"])
def test_every_day_series_has_every_day_of_the_window(make_app, orchestrator, backfill_days):
    root = orchestrator(OTHER_AGENTS, days=0)
    if backfill_days:
        run_orchestrator("backfill", "--root", str(root), "--days", str(backfill_days), "--seed", str(SEED))
    client = make_app(root, ORCHESTRATOR_TIMEZONE=ZONE).test_client()
    for days in (1, 7, 14):
        today = datetime.now(ZoneInfo(ZONE)).date()
        quality = client.get(f"/api/metrics/quality?days={days}").get_json()
        trends = client.get(f"/api/metrics/trends?days={days}").get_json()
        if datetime.now(ZoneInfo(ZONE)).date() != today:
            continue  # midnight passed in between: the next window is checked
        window = [(today - timedelta(days=i)).isoformat() for i in range(days - 1, -1, -1)]
        assert quality["timestamps"] == trends["timestamps"] == window
        series = {k: v for k, v in quality.items() if k not in ("timestamps", "warnings")}
        assert "system" in series and all(len(v) == days for v in series.values()), series
        assert len(trends["system"]) == len(trends["moving_average_7d"]) == days
    scores = quality["system"] + trends["system"]
    assert (None in scores, any(v is not None for v in scores)) == (True, bool(backfill_days))



def test_a_run_a_dashboard_session_ran_is_listed_once_though_their_ends_differ():
    run = {"date": "2026-01-01", "duration_seconds": 3.0, "overall_quality": None, "quality_change_percent": None,
           "agents_trained": 0, "agents_failed": 0, "error": "stopped on request (SIGTERM)"}
    session = dict(run, started_at="2026-01-01T10:00:00Z", finished_at="2026-01-01T10:00:05Z", status="stopped",
                   session_id=7, origin="dashboard")
    from_files = dict(run, started_at="2026-01-01T10:00:01Z", finished_at="2026-01-01T10:00:04Z", status="stopped")
    assert runs_history([session], [from_files], date(2026, 1, 1)) == [session]
