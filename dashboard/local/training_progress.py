"""A run's phases as the API names them, and how far the running one has got: pure functions of one
orchestrator view, weighting phases by the last successful run's durations."""
from __future__ import annotations

from typing import Optional

from data_loader import integer_or_none, number_or_none
from dashboard.local.orchestrator_state import OrchestratorState

PHASE_KEYS = ("harvesting", "validation", "agent_training", "production", "monitoring")
ALL_PHASES = PHASE_KEYS + ("cleanup",)
# holistic_training_result.json names the agent-training phase "training".
RESULT_PHASE = {"harvesting": "harvesting", "validation": "validation", "agent_training": "training",
                "production": "production", "monitoring": "monitoring", "cleanup": "cleanup"}


def last_success(s: OrchestratorState) -> dict:
    """The last successful run as {"phases": {result phase: {"time_seconds"}}, "agents_trained"}: the
    result file's when that run succeeded; else (a failed or stopped run overwrote it) the newest success
    in training_history, else in the newest log; {} when none is known."""
    if s.result.get("status") == "success":
        return s.result
    return s.memo("last_success", lambda: _history_success(s) or _log_success(s) or {})


def _history_success(s: OrchestratorState) -> Optional[dict]:
    for event in reversed(s.metrics.get("training_history", [])):
        data = event.get("data") or {}
        if event.get("event_type") != "holistic_training_complete" or data.get("status") != "success":
            continue
        raw = data.get("phases")
        phases = {k: v for k, v in raw.items() if isinstance(v, dict)} if isinstance(raw, dict) else {}
        trained = integer_or_none(data.get("agents_trained"))
        if trained is None:
            trained = integer_or_none((phases.get("training") or {}).get("agents_trained"))
        return {"phases": {k: {"time_seconds": number_or_none(v.get("time_seconds"))} for k, v in phases.items()},
                "agents_trained": trained}
    return None


def _log_success(s: OrchestratorState) -> Optional[dict]:
    for run in reversed(s.log_runs()):
        if run.get("finished") == "success":
            return {"phases": {RESULT_PHASE[k]: {"time_seconds": v} for k, v in run["completed_phases"].items()},
                    "agents_trained": len(run["agents_completed"])}
    return None


def _durations(s: OrchestratorState, keys: tuple) -> dict:
    phases = last_success(s).get("phases") or {}
    return {key: (phases.get(RESULT_PHASE[key]) or {}).get("time_seconds") for key in keys}


def phase_durations(s: OrchestratorState) -> dict:
    """{phase: seconds} of the last successful run (null for a phase it does not state)."""
    return _durations(s, PHASE_KEYS)


def training_speed_ms(s: OrchestratorState) -> Optional[int]:
    """The last successful run's agent-training phase, in ms."""
    seconds = phase_durations(s)["agent_training"]
    return round(seconds * 1000) if isinstance(seconds, (int, float)) else None


def current_phase(progress: dict) -> str:
    """The running run's phase: the log's open one; `starting` before its first phase begins; between
    two phases, the next one."""
    completed = progress.get("completed_phases") or {}
    if progress.get("current_phase"):
        return progress["current_phase"]
    if not completed:
        return "starting"
    return next((k for k in ALL_PHASES if k not in completed), ALL_PHASES[-1])


def estimate(s: OrchestratorState, progress: dict) -> tuple[Optional[float], Optional[int]]:
    """(percent done, seconds left) of the running run, each phase weighed by the last successful run's
    duration; without such a run, the share of phases done and no time left."""
    expected = _durations(s, ALL_PHASES)
    completed = progress.get("completed_phases") or {}
    current = progress.get("current_phase")
    if any(v is None for v in expected.values()):
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
