"""A run's phases as the API names them, and how far the running one has got: pure functions of one
orchestrator view, weighting phases by the last successful run's durations."""
from __future__ import annotations

from typing import Optional

from dashboard.local.orchestrator_state import OrchestratorState

PHASE_KEYS = ("harvesting", "validation", "agent_training", "production", "monitoring")
ALL_PHASES = PHASE_KEYS + ("cleanup",)
# holistic_training_result.json names the agent-training phase "training".
RESULT_PHASE = {"harvesting": "harvesting", "validation": "validation", "agent_training": "training",
                "production": "production", "monitoring": "monitoring", "cleanup": "cleanup"}


def phase_durations(s: OrchestratorState) -> dict:
    """{phase: seconds} of the last run's result (null for a phase it does not state)."""
    phases = s.result.get("phases") or {}
    return {key: (phases.get(RESULT_PHASE[key]) or {}).get("time_seconds") for key in PHASE_KEYS}


def estimate(s: OrchestratorState, progress: dict) -> tuple[Optional[float], Optional[int]]:
    """(percent done, seconds left) of the running run; without a successful run to weigh phases by,
    the share of phases done and no time left."""
    phases = s.result.get("phases") or {}
    expected = {k: (phases.get(RESULT_PHASE[k]) or {}).get("time_seconds") for k in ALL_PHASES}
    completed = progress.get("completed_phases") or {}
    current = progress.get("current_phase")
    if any(v is None for v in expected.values()) or s.result.get("status") != "success":
        done = len(completed) / len(ALL_PHASES)
        return round(min(done, 0.99) * 100, 1), None
    total = sum(expected.values()) or 1.0
    done = sum(expected[k] for k in completed if k in expected)
    if current in expected:
        started = progress.get("phase_started_at") or s.now
        elapsed = max(0.0, (s.now - started).total_seconds())
        if current == "agent_training" and s.agent_ids:
            fraction = len(progress.get("agents_completed", []) + progress.get("agents_failed", [])) / len(s.agent_ids)
            elapsed = max(elapsed, fraction * expected[current])
        done += min(elapsed, expected[current])
    return round(min(done / total, 0.99) * 100, 1), max(0, round(total - done))
