"""Each agent's row as the API shows it (contract.AgentStatus), derived from one orchestrator view."""
from __future__ import annotations

from datetime import timedelta
from typing import Optional

from dashboard.local.orchestrator_state import OrchestratorState

# Failed attempts within this window count as the agent's recent errors.
ERROR_WINDOW = timedelta(days=7)


def agent_rows(s: OrchestratorState, agent_ids: Optional[list[str]] = None) -> list[dict]:
    """The rows of `agent_ids`, by default of the listed agents (the first MAX_AGENTS, natural id order)."""
    progress = s.progress
    return [agent_row(s, agent_id, progress) for agent_id in (s.listed_agent_ids if agent_ids is None else agent_ids)]


def agent_row(s: OrchestratorState, agent_id: str, progress: dict) -> dict:
    """One agent: status, latest quality and timing (metrics file, else the newest report), recent errors."""
    points = s.quality_points(agent_id)
    latest = points[-1] if points else None
    report = s.latest_report_agent(agent_id)
    attempts = s.attempts(agent_id)
    failures = sum(1 for a in attempts if a.get("success") is False and s.now - a["timestamp"] <= ERROR_WINDOW)
    enabled = s.config.get("agents", {}).get(agent_id, {}).get("enabled")
    if progress["running"] and progress.get("current_agent") == agent_id:
        status = "training"
    elif attempts and attempts[-1].get("success") is False:
        status = "error"
    elif enabled is False or (latest is None and (report is None or report.get("quality") is None)):
        status = "offline"
    else:
        status = "online"
    if latest is not None:
        quality, updated = latest.get("score"), s.iso(latest["timestamp"])
        time_ms, improvement = latest.get("time_ms"), latest.get("improvement")
    elif report is not None:
        quality, updated = report.get("quality"), s.day_start_iso(report["date"])
        time_ms, improvement = report.get("processing_ms"), None
    else:
        quality = updated = time_ms = improvement = None
    return {"id": agent_id, "name": s.agent_name(agent_id), "status": status, "quality_score": quality,
            "last_updated": updated, "processing_time_ms": time_ms, "improvement": improvement,
            "errors": failures}
