"""Training runs as the orchestrator's files describe them: completed runs from `training_history`,
failed ones from the run log and from holistic_training_result.json (which only keeps the latest)."""
from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Optional

from data_loader import integer_or_none, number_or_none
from dashboard.local.orchestrator_state import SYSTEM_KEY, OrchestratorState
from dashboard.store.run_ids import base_run_id
from dashboard.timestamps import parse_iso, to_iso

# How close (s) the result file's timestamp must be to a run's end to be that run.
SAME_END_SECONDS = 120
# How long (s) before a run read from the files a dashboard-started session may have started to be that run.
SAME_RUN_SECONDS = 120
RUN_STATUS = {"success": "completed"}  # the orchestrator's word for a finished run, in the API's words


def run_status(s: OrchestratorState, status: Optional[str], finished: Optional[datetime]) -> Optional[str]:
    """The orchestrator's word for how a run ended, except that a run the dashboard stopped (the
    orchestrator says it failed: interrupted by SIGTERM) is `stopped`."""
    if status in (None, "success"):
        return status
    session = s.session_at(finished)
    return "stopped" if session is not None and session["status"] == "stopped" else status


def run_row(s: OrchestratorState, finished: Optional[datetime], duration: Optional[float], status: Optional[str],
            *, error: Optional[str] = None, quality: Optional[float] = None, change: Optional[float] = None,
            trained: Optional[int] = None, failed: Optional[int] = None) -> dict:
    """One run in the API's words (contract.TrainingRun without run_id/session_id/origin), times in UTC; a value
    of the wrong type (the files' JSON) is null."""
    duration, quality, change = number_or_none(duration), number_or_none(quality), number_or_none(change)
    trained, failed = integer_or_none(trained), integer_or_none(failed)
    status, error = (v if isinstance(v, str) and v else None for v in (status, error))
    try:
        started = finished - timedelta(seconds=duration) if finished and duration is not None else None
    except (OverflowError, ValueError):  # a duration out of datetime's range (NaN, 1e300): no start time
        started = None
    return {"date": (started or finished).date().isoformat(), "started_at": s.iso(started),
            "finished_at": s.iso(finished), "duration_seconds": duration, "overall_quality": quality,
            "quality_change_percent": change, "agents_trained": trained, "agents_failed": failed,
            "status": status or "unknown", "error": error}


def history_run(s: OrchestratorState, event: dict, quality: Optional[float] = None) -> Optional[dict]:
    """The run a `training_history` entry describes (metric_point-typed), or None for other entries."""
    data = event.get("data") or {}
    if event.get("event_type") != "holistic_training_complete":
        return None
    return run_row(s, event["timestamp"], data.get("total_time_seconds"), data.get("status"),
                   error=data.get("error"), quality=quality, change=data.get("system_quality_delta"),
                   trained=data.get("agents_trained"),
                   failed=((data.get("phases") or {}).get("training") or {}).get("agents_failed"))


def runs_from_files(s: OrchestratorState) -> list[dict]:
    """Every run the files describe, unordered: each completed, failed or interrupted run once."""
    system = {p["timestamp"]: p.get("score") for p in s.metrics.get(SYSTEM_KEY, [])}
    runs = []
    for event in s.metrics.get("training_history", []):
        run = history_run(s, event, system.get(event["timestamp"]))
        if run is not None:
            runs.append(run)
    known = {r["finished_at"] for r in runs}
    for run in s.log_runs():
        end = run.get("finished_at")
        if run.get("finished") == "failed" and s.iso(end) not in known:
            duration = (end - run["started_at"]).total_seconds() if run.get("started_at") else None
            runs.append(run_row(s, end, duration, run_status(s, "failed", end), error=run.get("error"),
                                trained=len(run.get("agents_completed", [])), failed=len(run.get("agents_failed", []))))
            known.add(s.iso(end))
    result = s.result
    if result.get("status") not in (None, "success") and result.get("timestamp") is not None:
        if not any(_near(s, r["finished_at"], result["timestamp"]) for r in runs):
            runs.append(run_row(s, result["timestamp"], result.get("total_time_seconds"),
                                run_status(s, result["status"], result["timestamp"]),
                                error=result.get("error")))
    return runs


def _near(s: OrchestratorState, iso: Optional[str], naive: datetime) -> bool:
    if iso is None:
        return False
    parsed = parse_iso(iso)
    return abs((parsed - naive.replace(tzinfo=s.tz)).total_seconds()) < SAME_END_SECONDS


def session_window(run: dict) -> tuple[str, str]:
    """(earliest, latest) start (ISO UTC) of the dashboard session that ran `run` (read from the files):
    at most SAME_RUN_SECONDS before the run began, and before it ended."""
    def shifted(iso: str, seconds: int) -> str:
        return to_iso(parse_iso(iso) + timedelta(seconds=seconds))
    return shifted(run["started_at"] or run["finished_at"], -SAME_RUN_SECONDS), shifted(run["finished_at"], 1)


def runs_history(recorded: list[dict], from_files: list[dict], first_day: date) -> list[dict]:
    """/api/training/history: the recorded runs and those only the files show yet (not one a recorded
    dashboard session ran: its end differs from the session's), since `first_day`, newest first."""
    known = {r["finished_at"] for r in recorded if r["finished_at"]}
    sessions = [r["started_at"] for r in recorded if r["origin"] == "dashboard" and r["started_at"]]

    def recorded_here(run: dict) -> bool:
        if run["finished_at"] is None:
            return False
        earliest, latest = session_window(run)
        return run["finished_at"] in known or any(earliest <= start <= latest for start in sessions)
    runs = list(recorded) + [dict(run, status=RUN_STATUS.get(run["status"], run["status"]), session_id=None,
                                  origin="orchestrator", started_by=None, stopped_by=None,
                                  run_id=base_run_id(run["started_at"], run["finished_at"]))
                             for run in from_files if not recorded_here(run)]
    runs.sort(key=lambda r: (r["finished_at"] or r["started_at"] or r["date"]), reverse=True)
    return [r for r in runs if r["date"] >= first_day.isoformat()]
