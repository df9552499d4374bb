"""The alert rules: which alerts hold right now, from one orchestrator view, its agent rows and a host
reading. Pure: the ingester records when each begins and ends (events.sync_alerts); reads only look."""
from __future__ import annotations

from typing import Mapping, Optional

from dashboard.local.orchestrator_state import OrchestratorState, local_instant

HOST_RESOURCES = (("cpu", "cpu_percent"), ("memory", "memory_percent"), ("disk", "disk_percent"))


def current_alerts(s: OrchestratorState, rows: list[dict], threshold: float, sample: dict,
                   limits: Mapping[str, float]) -> list[dict]:
    """Every alert that holds now: the files' (training, agents) and the host's."""
    return file_alerts(s, rows, threshold) + host_alerts(sample, limits)


def host_alerts(sample: dict, limits: Mapping[str, float]) -> list[dict]:
    """CPU, memory and disk over their ALERT_<RESOURCE>_<LEVEL> thresholds (a threshold of 0 is off)."""
    alerts = []
    for resource, key in HOST_RESOURCES:
        value = sample.get(key)
        if value is None:
            continue
        for severity in ("critical", "warning"):
            limit = limits[f"ALERT_{resource.upper()}_{severity.upper()}"]
            if limit and value >= limit:
                alerts.append({"id": f"host.{resource}", "severity": severity, "source": "host",
                               "message": f"{resource} at {value:.0f}% (≥ {limit:g}% {severity} threshold)",
                               "since": sample.get("timestamp")})
                break
    return alerts


def file_alerts(s: OrchestratorState, rows: list[dict], threshold: float) -> list[dict]:
    """A failed last run (not one the dashboard stopped), an overdue run, agents that failed or score
    below `threshold`."""
    alerts = []
    result = s.result
    if _failed(s, result):
        alerts.append({"id": "training.last_run_failed", "severity": "critical", "source": "training",
                       "message": f"last training run {result['status']}: {result.get('error') or 'no reason given'}",
                       "since": s.iso(result.get("timestamp"))})
    last = result.get("timestamp")
    interval = s.schedule_interval(last) if last and s.config.get("enabled") is not False else None
    # 1.5 intervals of wall time after the last run, as a real instant (DST: local_instant).
    deadline = local_instant(last + interval * 1.5, s.tz) if interval is not None else None
    if deadline is not None and s.now_utc > deadline and not s.progress["running"]:
        alerts.append({"id": "training.overdue", "severity": "warning", "source": "training",
                       "message": f"no training run since {s.iso(last)} (schedule {s.schedule})",
                       "since": s.iso(deadline)})
    for row in rows:
        if row["status"] == "error":
            alerts.append({"id": f"agent.{row['id']}.failed", "severity": "warning", "source": row["id"],
                           "message": f"{row['name']} failed its last training",
                           "since": s.iso(s.attempts(row["id"])[-1]["timestamp"])})
        if row["quality_score"] is not None and row["quality_score"] < threshold:
            alerts.append({"id": f"agent.{row['id']}.low_quality", "severity": "warning", "source": row["id"],
                           "message": f"{row['name']} quality {row['quality_score']} is below {threshold}",
                           "since": _below_since(s, row["id"], threshold)})
    return alerts


def _failed(s: OrchestratorState, result: dict) -> bool:
    """Whether the last run failed: the result says so, and no dashboard session that ran it stopped it
    or is still settling how it ended (its wrapper records that a moment after the result is written)."""
    if result.get("status") in (None, "success"):
        return False
    session = s.session_at(result.get("timestamp"))
    return session is None or session["status"] not in ("stopped", "running")


def _below_since(s: OrchestratorState, agent_id: str, threshold: float) -> Optional[str]:
    since = None
    for point in s.quality_points(agent_id):
        score = point.get("score")
        if score is not None and score < threshold:
            since = since or point["timestamp"]
        elif score is not None:
            since = None
    return s.iso(since)
