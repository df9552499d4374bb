"""A real orchestrator run as a subprocess: the status endpoint follows it live, then history records it."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

from conftest import ORCHESTRATOR, poll

HISTORY = "/api/training/history?days=30"  # holds every backfilled run, on whichever side of midnight


def test_status_follows_a_real_run_through_its_phases(make_app, orchestrator):
    root = orchestrator()
    client = make_app(root).test_client()
    before = client.get(HISTORY).get_json()
    env = {**os.environ, "ORCHESTRATOR_TIME_SCALE": "0.3"}
    proc = subprocess.Popen([sys.executable, str(ORCHESTRATOR), "train", "--root", str(root)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def frozen_status() -> dict:
        """The status with the run stopped (SIGSTOP); the run goes on unless it is training an agent."""
        proc.send_signal(signal.SIGSTOP)
        status = client.get("/api/training/status").get_json()
        if not training_an_agent(status):
            proc.send_signal(signal.SIGCONT)
        return status

    try:
        live = poll(frozen_status, training_an_agent)[-1]
        # The run holds still, so every endpoint describes the same moment of it.
        assert 0 < live["progress_percent"] < 100
        assert live["estimated_time_remaining_sec"] is not None and live["started_at"].endswith("Z")
        assert client.get("/api/dashboard/overview").get_json()["current_phase"] == "agent_training"
        agents = client.get("/api/agents/status").get_json()
        assert [a["id"] for a in agents if a["status"] == "training"] == [live["current_agent"]]
        proc.send_signal(signal.SIGCONT)
        assert proc.wait(timeout=60) == 0, proc.stderr.read()
    finally:
        proc.kill()
        proc.wait()
        proc.stderr.close()
    final = client.get("/api/training/status").get_json()
    assert final["is_running"] is False and final["current_phase"] == "idle"
    assert final["progress_percent"] is None
    after = client.get(HISTORY).get_json()
    assert len(after) == len(before) + 1 and after[0]["status"] == "completed"
    assert after[0]["started_at"] > before[0]["finished_at"]


def training_an_agent(status: dict) -> bool:
    """Whether a status shows a run in its agent-training phase with an agent in hand."""
    return status["is_running"] and status["current_phase"] == "agent_training" and status["current_agent"] is not None
