"""Training control with real processes: start, single flight, live status, stop and SIGKILL escalation,
exit recording, lost-wrapper reconciling, no zombies, and a real 2-worker gunicorn that is restarted
while a run goes on. Nothing is mocked; every test kills what it started."""
from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import psutil
import pytest
from pydantic import TypeAdapter

from conftest import EXAMPLE_AGENTS, ORCHESTRATOR, ingest, poll
from dashboard.contract import RESPONSES
from servers import Gunicorn

SLEEPER = "import time; print('ready', flush=True); time.sleep(120)"
IGNORES_TERM = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True);"
                " time.sleep(120)")


def py(code: str) -> str:
    """A TRAINING_COMMAND running `code` with this project's Python (the leading `python` is replaced)."""
    return f"python -c {shlex.quote(code)}"


def read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def group_gone(pgid: int) -> bool:
    """No live process is left in process group `pgid`."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    # A killed orphan stays a zombie until PID 1 reaps it, which is up to PID 1, not to the code under test.
    for proc in psutil.process_iter(["status"]):
        try:
            if proc.info["status"] != psutil.STATUS_ZOMBIE and os.getpgid(proc.pid) == pgid:
                return False
        except (OSError, psutil.Error):
            pass
    return True


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def kill_runs(runs_dir: Path) -> None:
    """Kill every process group a test's runs left (wrapper and command), checking create times."""
    if not runs_dir.is_dir():
        return
    for run in runs_dir.iterdir():
        for name in ("child.json", "wrapper.json"):
            try:
                info = read_json(run / name)
                proc = psutil.Process(info["pid"])
                if info.get("create_time") is None or abs(proc.create_time() - info["create_time"]) < 1:
                    os.killpg(info.get("pgid", info["pid"]), signal.SIGKILL)
            except (OSError, ValueError, KeyError, psutil.Error):
                pass


@pytest.fixture
def control(make_app, orchestrator, tmp_path):
    """Factory: (app, client, root) over an orchestrator copy that holds orchestrator.py itself, so the
    default TRAINING_COMMAND (`python orchestrator.py train --verbose`, cwd = the root) runs there."""
    made = []

    def make(**config):
        root = orchestrator()
        shutil.copy(ORCHESTRATOR, root / "orchestrator.py")
        app = make_app(root, **config)
        made.append(app.config["TRAINING_RUNS_DIR"])
        return app, app.test_client(), root

    yield make
    for runs_dir in made:
        kill_runs(Path(runs_dir))


def session(client, session_id: int) -> dict:
    response = client.get(f"/api/training/session/{session_id}")
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def finished(client, session_id: int, deadline_seconds: float = 30.0) -> dict:
    return poll(lambda: session(client, session_id), lambda s: s["status"] != "running", deadline_seconds)[-1]


def start(client, **kwargs) -> dict:
    response = client.post("/api/training/start", **kwargs)
    assert response.status_code == 202, response.get_json()
    body = response.get_json()
    TypeAdapter(RESPONSES["training_start"]).validate_python(body)
    return body


def db_rows(app, sql: str, *params) -> list[dict]:
    conn = sqlite3.connect(app.config["DATABASE_PATH"])
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(sql, params)]
    finally:
        conn.close()


def wait_for_output(path: Path, text: str, deadline_seconds: float = 15.0) -> None:
    poll(lambda: path.read_text(encoding="utf-8", errors="replace") if path.exists() else "",
         lambda out: text in out, deadline_seconds)


def ready_child(run_dir: Path) -> dict:
    """The command's child.json, once the command has printed "ready" (the wrapper writes the file just after
    starting it, so either may come first)."""
    wait_for_output(run_dir / "output.log", "ready")
    poll(lambda: (run_dir / "child.json").exists(), bool, 10)
    return read_json(run_dir / "child.json")


# --- the real orchestrator, end to end ---

def test_a_started_run_is_followed_live_and_recorded_when_it_completes(control, monkeypatch):
    monkeypatch.setenv("ORCHESTRATOR_TIME_SCALE", "0.3")  # the command inherits the server's environment
    app, client, root = control()
    before = client.get("/api/training/history?days=2").get_json()
    started = start(client)
    assert started["status"] == "running" and started["started_at"].endswith("Z")
    sid = started["session_id"]

    second = client.post("/api/training/start", json={"force": True})
    assert second.status_code == 409
    assert second.get_json()["session_id"] == sid and second.get_json()["status"] == 409

    row = db_rows(app, "SELECT * FROM training_sessions WHERE session_number = ?", sid)[0]
    assert (row["origin"], row["status"], row["command"]) == ("dashboard", "running", "python orchestrator.py train --verbose")
    assert row["pid"] and row["start_time"] == started["started_at"]
    assert Path(row["output_path"]) == Path(app.config["TRAINING_RUNS_DIR"]) / str(sid) / "output.log"

    statuses = poll(lambda: client.get("/api/training/status").get_json(), lambda s: not s["is_running"], 60, 0.2)
    for status in statuses:
        TypeAdapter(RESPONSES["training_status"]).validate_python(status)
    live = [s for s in statuses if s["is_running"]]
    assert all(s["session_id"] == sid for s in live)
    phases = [s["current_phase"] for s in live if s["current_phase"]]
    assert len(set(phases)) >= 2, phases
    assert phases.index("validation") < phases.index("agent_training") if {"validation", "agent_training"} <= set(phases) else True
    progress = [s["progress_percent"] for s in live if s["progress_percent"] is not None]
    assert progress[-1] > progress[0], progress
    assert all(b >= a - 0.5 for a, b in zip(progress, progress[1:])), progress
    assert any(s["current_agent"] for s in live) or "agent_training" not in phases

    done = finished(client, sid)
    TypeAdapter(RESPONSES["training_session"]).validate_python(done)
    assert (done["status"], done["exit_code"], done["error_message"]) == ("completed", 0, None)
    assert done["ended_at"] >= done["started_at"]
    poll(lambda: alive(done["pid"]), lambda a: not a, 5)  # the wrapper ends right after recording
    assert read_json(Path(done["output_path"]).parent / "exit_status.json")["status"] == "completed"
    # The seed's day may fail an agent or leave one without data; every agent has its turn all the same.
    training = read_json(root / "holistic_training_result.json")["phases"]["training"]
    assert sorted(training["results"]) == sorted(EXAMPLE_AGENTS)
    summary = f"OK: {training['agents_trained']}/{len(EXAMPLE_AGENTS)} agents trained"
    assert summary in Path(done["output_path"]).read_text(encoding="utf-8")

    idle = client.get("/api/training/status").get_json()
    assert (idle["is_running"], idle["session_id"], idle["current_phase"]) == (False, None, "idle")
    assert all(idle["phase_durations"][k] is not None for k in ("harvesting", "validation", "agent_training"))

    history = client.get("/api/training/history?days=2").get_json()
    assert len(history) == len(before) + 1
    newest = history[0]
    assert newest["status"] in ("completed", "success") and newest["finished_at"] >= started["started_at"]
    assert newest.get("session_id") == sid

    events = poll(lambda: db_rows(app, "SELECT event_type FROM events WHERE source = 'training' ORDER BY id"),
                  lambda rows: len(rows) >= 2, 5)[-1]
    assert [e["event_type"] for e in events] == ["training_started", "training_completed"]


def test_stop_ends_the_whole_process_group_within_the_grace(control):
    app, client, root = control(TRAINING_STOP_GRACE_SECONDS=5)
    sid = start(client, json={})["session_id"]
    poll(lambda: client.get("/api/training/status").get_json(), lambda s: s["current_phase"] not in (None, "starting"), 20)
    run_dir = Path(app.config["TRAINING_RUNS_DIR"]) / str(sid)
    child = read_json(run_dir / "child.json")
    assert not group_gone(child["pgid"])

    response = client.post("/api/training/stop")
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    TypeAdapter(RESPONSES["training_stop"]).validate_python(body)
    poll(lambda: group_gone(child["pgid"]), bool)
    assert (body["session_id"], body["status"]) == (sid, "stopped")
    # Within the grace: ended by SIGTERM itself, never escalated to SIGKILL.
    assert body["exit_code"] == 143  # the orchestrator's own answer to SIGTERM
    assert "SIGTERM" in body["error_message"] and "SIGKILL" not in body["error_message"] and body["ended_at"]
    assert read_json(run_dir / "exit_status.json")["killed"] is False
    poll(lambda: alive(body["pid"]), lambda a: not a, 5)

    status = client.get("/api/training/status").get_json()
    assert (status["is_running"], status["session_id"]) == (False, None)
    assert client.post("/api/training/stop").status_code == 409
    events = db_rows(app, "SELECT event_type, severity FROM events WHERE source = 'training' ORDER BY id")
    assert [e["event_type"] for e in events] == ["training_started", "training_stop_requested", "training_stopped"]


def test_a_command_ignoring_sigterm_is_killed_at_the_grace(control):
    app, client, _ = control(TRAINING_COMMAND=py(IGNORES_TERM), TRAINING_STOP_GRACE_SECONDS=2)
    sid = start(client)["session_id"]
    run_dir = Path(app.config["TRAINING_RUNS_DIR"]) / str(sid)
    child = ready_child(run_dir)

    began = time.monotonic()
    response = client.post("/api/training/stop")
    assert response.status_code in (200, 202)
    poll(lambda: group_gone(child["pgid"]), bool)
    took = time.monotonic() - began
    assert took >= 2, took  # it survived SIGTERM: the SIGKILL only comes once the 2 s grace has passed
    done = finished(client, sid, 10)
    assert done["status"] == "stopped" and done["exit_code"] in (-9, 137)
    assert "SIGKILL" in done["error_message"]
    assert read_json(run_dir / "exit_status.json")["killed"] is True


@pytest.mark.parametrize("code,status,exit_code,error", [
    ("print('all good')", "completed", 0, None),
    ("import sys; print('ERROR: dataset missing', flush=True); print('cleaning up'); sys.exit(1)",
     "failed", 1, "ERROR: dataset missing"),
    ("raise ValueError('bad config')", "failed", 1, "ValueError: bad config"),
    ("import sys; sys.exit(137)", "failed", 137, "exit code 137"),
])
def test_exit_statuses_are_recorded(control, code, status, exit_code, error):
    app, client, _ = control(TRAINING_COMMAND=py(code))
    sid = start(client)["session_id"]
    done = finished(client, sid, 15)
    assert (done["status"], done["exit_code"], done["error_message"]) == (status, exit_code, error)
    events = poll(lambda: db_rows(app, "SELECT event_type FROM events WHERE source = 'training' ORDER BY id"),
                  lambda rows: len(rows) == 2, 5)[-1]  # the end event follows the row update
    assert [e["event_type"] for e in events] == ["training_started", f"training_{status}"]
    assert client.get("/api/training/status").get_json()["session_id"] is None


def test_a_missing_command_gives_a_failed_session_with_the_reason(control):
    app, client, _ = control(TRAINING_COMMAND="no-such-trainer-4711 --fast")
    sid = start(client)["session_id"]  # documented: 202, then the session fails
    done = finished(client, sid, 15)
    assert done["status"] == "failed" and done["exit_code"] is None
    assert done["error_message"] == "command not found: no-such-trainer-4711"
    assert client.get(f"/api/training/session/{sid + 100}").status_code == 404
    again = client.post("/api/training/start")  # nothing is left running: a start is possible again
    assert again.status_code == 202


def test_start_body_is_validated(control):
    app, client, _ = control(TRAINING_COMMAND=py(SLEEPER))
    response = client.post("/api/training/start", json={"force": "yes"})
    assert response.status_code == 400 and "force" in response.get_json()["error"]
    response = client.post("/api/training/start", json={"force": False, "priority": 1})
    assert response.status_code == 400 and "priority" in response.get_json()["error"]
    response = client.post("/api/training/start", data="force=1", content_type="application/x-www-form-urlencoded")
    assert response.status_code == 415
    response = client.post("/api/training/start", data="[true]", content_type="application/json")
    assert response.status_code == 400
    assert db_rows(app, "SELECT COUNT(*) AS n FROM training_sessions WHERE origin = 'dashboard'")[0]["n"] == 0
    assert client.post("/api/training/stop").get_json() == {"error": "no training run is active", "status": 409}
    sid = start(client, data="", content_type="application/json")["session_id"]
    assert client.post("/api/training/stop").get_json()["status"] == "stopped"
    assert session(client, sid)["status"] == "stopped"


def test_no_zombies_after_start_stop_cycles(control):
    app, client, _ = control(TRAINING_COMMAND=py(SLEEPER), TRAINING_STOP_GRACE_SECONDS=3)
    wrappers = []
    for _ in range(4):
        sid = start(client)["session_id"]
        wait_for_output(Path(app.config["TRAINING_RUNS_DIR"]) / str(sid) / "output.log", "ready")
        stopped = client.post("/api/training/stop")
        assert stopped.status_code == 200 and stopped.get_json()["status"] == "stopped"
        wrappers.append(stopped.get_json()["pid"])
    me = psutil.Process()

    def leftovers():
        found = [pid for pid in wrappers if alive(pid)]
        for proc in me.children(recursive=True):
            try:
                if proc.status() == psutil.STATUS_ZOMBIE:
                    found.append(f"zombie {proc.pid}")
            except psutil.NoSuchProcess:
                pass
        return found

    poll(leftovers, lambda found: not found, 10)  # wrappers end, and the watcher threads reap them
    assert all(not psutil.pid_exists(pid) for pid in wrappers)
    # Dashboard sessions only: the ingester adds the orchestrator's own runs in the background.
    rows = db_rows(app, "SELECT status FROM training_sessions WHERE origin = 'dashboard'")
    assert [r["status"] for r in rows] == ["stopped"] * 4


def test_a_lost_wrapper_is_reconciled_and_its_orphan_killed(control):
    app, client, _ = control(TRAINING_COMMAND=py(SLEEPER))
    sid = start(client)["session_id"]
    run_dir = Path(app.config["TRAINING_RUNS_DIR"]) / str(sid)
    child, wrapper = ready_child(run_dir), read_json(run_dir / "wrapper.json")
    os.kill(wrapper["pid"], signal.SIGKILL)  # the wrapper dies without recording anything
    poll(lambda: alive(wrapper["pid"]), lambda a: not a, 5)
    assert not group_gone(child["pgid"])

    status = client.get("/api/training/status").get_json()  # a read shows the run has ended
    assert (status["is_running"], status["session_id"]) == (False, None)
    done = session(client, sid)
    assert done["status"] == "failed" and done["error_message"].startswith("lost: ")
    ingest(app)  # the ingester's round (a thread every INGEST_SECONDS outside tests) records it
    poll(lambda: group_gone(child["pgid"]), bool, 5)
    assert read_json(run_dir / "exit_status.json")["lost"] is True
    assert session(client, sid)["error_message"].endswith(f"its orphaned process group {child['pgid']} was killed")
    assert client.post("/api/training/start").status_code == 202


def test_a_killed_orchestrator_does_not_look_running_and_a_foreign_run_needs_force(control, monkeypatch):
    monkeypatch.setenv("ORCHESTRATOR_TIME_SCALE", "0.3")
    app, client, root = control()
    sid = start(client)["session_id"]
    poll(lambda: client.get("/api/training/status").get_json(), lambda s: s["current_phase"] not in (None, "starting"), 20)
    child = read_json(Path(app.config["TRAINING_RUNS_DIR"]) / str(sid) / "child.json")
    os.killpg(child["pgid"], signal.SIGKILL)  # no final line in the orchestrator's log
    done = finished(client, sid, 10)
    assert done["status"] == "failed" and done["exit_code"] == -9
    assert done["error_message"].startswith("killed by SIGKILL")
    status = client.get("/api/training/status").get_json()
    assert status["is_running"] is False
    assert any(f"dashboard session {sid}" in w for w in status["warnings"])

    # A run the log shows but no dashboard session owns (cron, by hand) blocks a start unless forced.
    # It starts in a later (whole) second than the session ended, so that session cannot have run it.
    ended = datetime.fromisoformat(done["ended_at"].replace("Z", "+00:00"))
    poll(lambda: datetime.now(timezone.utc).replace(microsecond=0), lambda now: now > ended, 5)
    stamp = datetime.now().strftime("%Y-%m-%d %H:%M:%S,000")
    with open(root / "logs" / "holistic_training.log", "a", encoding="utf-8") as log:
        log.write(f"{stamp} - HolisticTrainer - INFO - HOLISTIC TRAINING PIPELINE STARTED\n")
    assert client.get("/api/training/status").get_json()["is_running"] is True
    blocked = client.post("/api/training/start")
    assert blocked.status_code == 409 and blocked.get_json()["session_id"] is None
    assert "force" in blocked.get_json()["error"]
    monkeypatch.setenv("ORCHESTRATOR_TIME_SCALE", "5")  # slow: it is stopped below
    forced = start(client, json={"force": True})
    assert client.post("/api/training/stop").status_code == 200
    assert session(client, forced["session_id"])["status"] == "stopped"


# --- a real gunicorn with two workers, restarted while a run goes on ---

def test_one_run_across_gunicorn_workers_and_a_server_restart(orchestrator, tmp_path):
    # Its own process group, and stopped by SIGTERM to the whole group (as Ctrl-C or a supervisor would).
    server = Gunicorn(orchestrator(), tmp_path / "server", new_session=True, TRAINING_COMMAND=py(SLEEPER),
                      TRAINING_STOP_GRACE_SECONDS="3").start()
    runs, database = tmp_path / "server" / "runs", tmp_path / "server" / "db.sqlite"
    try:
        with ThreadPoolExecutor(max_workers=20) as pool:
            answers = list(pool.map(lambda _: server.post_json("/api/training/start", {}, timeout=30), range(20)))
        codes = sorted(code for code, _ in answers)
        assert codes == [202] + [409] * 19, answers
        sid = next(body["session_id"] for code, body in answers if code == 202)
        assert all(body["session_id"] == sid for code, body in answers if code == 409)
        conn = sqlite3.connect(database)
        try:
            rows = conn.execute("SELECT session_number, pid FROM training_sessions WHERE status = 'running'").fetchall()
        finally:
            conn.close()
        assert len(rows) == 1 and rows[0][0] == sid
        wrapper, child = read_json(runs / str(sid) / "wrapper.json"), ready_child(runs / str(sid))
        assert rows[0][1] == wrapper["pid"]

        server.stop()  # SIGTERM to its group: gunicorn and its workers go, the run must not
        assert "Traceback" not in server.stderr.decode(errors="replace")
        assert alive(wrapper["pid"]) and alive(child["pid"])
        # The signal went to every process of the server's group at once; the run is in none of them.
        assert server.proc.pid not in (os.getpgid(wrapper["pid"]), os.getpgid(child["pid"]))

        server.start()  # a restarted dashboard on the same port and database finds the run
        code, status = server.get_json("/api/training/status")
        assert code == 200 and (status["is_running"], status["session_id"]) == (True, sid)
        assert server.post_json("/api/training/start", {})[1]["session_id"] == sid
        code, stopped = server.post_json("/api/training/stop", {})
        assert code == 200 and (stopped["session_id"], stopped["status"]) == (sid, "stopped")
        poll(lambda: group_gone(child["pgid"]), bool, 5)
        code, status = server.get_json("/api/training/status")
        assert (status["is_running"], status["session_id"]) == (False, None)
    finally:
        server.stop()
        kill_runs(runs)
    assert "Traceback" not in server.log_path.read_text(encoding="utf-8")


def test_a_stop_right_after_a_start_is_a_clean_stop_with_an_exit_code(control, monkeypatch):
    # plan T35: the stop's SIGTERM reaches the wrapper while Python is still starting it; the wrapper was
    # spawned with its stop signals blocked, so the signal waits until its handler is in place.
    monkeypatch.setenv("ORCHESTRATOR_TIME_SCALE", "0.3")
    app, client, _ = control(TRAINING_STOP_GRACE_SECONDS=5)
    ended = []
    for _ in range(10):
        sid = start(client)["session_id"]
        stop = client.post("/api/training/stop")
        assert stop.status_code in (200, 202), stop.get_json()
        ended.append(finished(client, sid))
    assert [s["status"] for s in ended] == ["stopped"] * 10, ended
    assert all(s["exit_code"] is not None for s in ended), ended
    assert not [s for s in ended if "lost" in (s["error_message"] or "")], ended
