"""A real orchestrator run as a subprocess: the status endpoint follows it live, then history records it."""
from __future__ import annotations

import os
import subprocess
import sys

from conftest import ORCHESTRATOR, poll


def test_status_follows_a_real_run_through_its_phases(make_app, orchestrator):
    root = orchestrator()
    client = make_app(root).test_client()
    before = client.get("/api/training/history?days=2").get_json()
    env = {**os.environ, "ORCHESTRATOR_TIME_SCALE": "0.3"}
    proc = subprocess.Popen([sys.executable, str(ORCHESTRATOR), "train", "--root", str(root)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        status = lambda: client.get("/api/training/status").get_json()  # noqa: E731
        seen = poll(status, lambda s: s["is_running"] and s["current_phase"] == "agent_training"
                    and s["current_agent"] is not None)
        live = seen[-1]
        assert 0 < live["progress_percent"] < 100
        assert live["estimated_time_remaining_sec"] is not None and live["started_at"].endswith("Z")
        overview = client.get("/api/dashboard/overview").get_json()
        assert overview["current_phase"] in ("agent_training", "production", "monitoring")
        agents = client.get("/api/agents/status").get_json()
        assert any(a["status"] == "training" for a in agents) or not client.get(
            "/api/training/status").get_json()["current_agent"]
        assert proc.wait(timeout=60) == 0, proc.stderr.read()
    finally:
        proc.kill()
        proc.wait()
        proc.stderr.close()
    final = client.get("/api/training/status").get_json()
    assert final["is_running"] is False and final["current_phase"] == "idle"
    assert final["progress_percent"] is None
    after = client.get("/api/training/history?days=2").get_json()
    assert len(after) == len(before) + 1 and after[0]["status"] == "completed"
