"""One training run's own record (GET /api/training/runs/<run_id>): its phases, agents and ERROR/WARNING
lines as the run log shows them, its agents' quality from the metrics, the command's output for a
dashboard session, and how its phases compare with the run before it. What the files do not say is null."""
from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Optional

from dashboard.local.log_reader import (AGENT_START_RE, PHASE_BY_NAME, PHASE_LINE_RE, PHASES, RUN_STARTED,
                                        iter_log_events, tail_lines)
from dashboard.local.orchestrator_state import OrchestratorState
from dashboard.timestamps import parse_iso

PHASE_KEYS = [key for key, _name in PHASES]
# The log's first line of a run comes after its recorded start: the orchestrator (or a dashboard session's
# command) starts, then logs. How much earlier a recorded start may be, and how long a run's last lines
# may follow its recorded end.
START_SLACK = timedelta(seconds=5)
END_SLACK = timedelta(seconds=60)
MAX_RUN_EVENTS = 20000
OUTPUT_TAIL_LINES = 100
ERROR_LEVELS = ("WARNING", "ERROR", "CRITICAL")
AGENT_NAMED_RE = re.compile(r"^Training (agent_[A-Za-z0-9]+) \((.+)\) - START\b")
AGENT_DONE_RE = re.compile(r"^(agent_[A-Za-z0-9]+) training (completed|failed)\b:?\s*(.*)$")
AGENT_NO_DATA_RE = re.compile(r"^No training data for (agent_[A-Za-z0-9]+)\b")
MS_RE = re.compile(r"\b(\d+)\s*ms\b")


def _local(s: OrchestratorState, iso: Optional[str]) -> Optional[datetime]:
    """An ISO UTC time as the log's naive orchestrator-local time."""
    return parse_iso(iso).astimezone(s.tz).replace(tzinfo=None) if iso else None


def _first_line(event: dict) -> str:
    return event["message"].split("\n", 1)[0].strip()


def run_events(s: OrchestratorState, run: dict) -> list[dict]:
    """The run log's events of `run` (a history row), oldest first: from the run's first line (the first
    `STARTED` line after its recorded start, or the last before its end when its start is unknown) to
    the line before the next run's; [] when no log shows it."""
    start, end = _local(s, run["started_at"]), _local(s, run["finished_at"])
    if start is None and end is None:
        return []
    timeout = timedelta(seconds=s.run_timeout)
    low = start - START_SLACK if start else end - timeout
    high = (end + timedelta(seconds=1)) if end else start + timeout
    for path in s.log_files:  # newest first
        events = _events_from(path, low, high, first=start is not None, end=end)
        if events:
            return events
    return []


def _events_from(path, low: datetime, high: datetime, first: bool, end: Optional[datetime]) -> list[dict]:
    """The events of the run whose STARTED line is in [low, high] (the first one, or the last) in one log."""
    found: list[dict] = []
    for event in iter_log_events(path, since=low):
        when, starts = event["timestamp"], RUN_STARTED in _first_line(event)
        if starts and low <= when <= high and not (first and found):
            found = [event]  # (the last such line, when looking for the last)
        elif found and (starts or len(found) >= MAX_RUN_EVENTS or (end is not None and when > end + END_SLACK)):
            break  # the next run's first line, or past this run's end
        elif found:
            found.append(event)
        elif when > high:
            break
    return found


def phases_of(s: OrchestratorState, events: list[dict], status: str) -> list[dict]:
    """The phases the run's log lines show, in the order they started; a phase that started and never
    completed has the run's status (running, failed, stopped), else `unknown`."""
    phases: dict[str, dict] = {}
    for event in events:
        m = PHASE_LINE_RE.match(_first_line(event))
        if not m or m.group(1).lower() not in PHASE_BY_NAME:
            continue
        phase = phases.setdefault(PHASE_BY_NAME[m.group(1).lower()], {
            "name": PHASE_BY_NAME[m.group(1).lower()], "started_at": None, "finished_at": None,
            "duration_seconds": None, "status": None, "_start": None})
        if m.group(2) == "START":
            phase.update(started_at=s.iso(event["timestamp"]), _start=event["timestamp"])
            continue
        duration = float(m.group(3)) if m.group(3) else None
        if duration is None and phase["_start"] is not None:
            duration = round((event["timestamp"] - phase["_start"]).total_seconds(), 2)
        phase.update(finished_at=s.iso(event["timestamp"]), duration_seconds=duration, status="completed")
    open_status = status if status in ("running", "failed", "stopped") else "unknown"
    return [{**{k: v for k, v in p.items() if k != "_start"}, "status": p["status"] or open_status}
            for p in phases.values()]


def agents_of(s: OrchestratorState, events: list[dict], status: str) -> list[dict]:
    """The agents the run's log lines name, in the order they appear, with their quality before and after
    the run from the metrics (the point within the run, the one before it)."""
    agents: dict[str, dict] = {}
    open_status = status if status in ("running", "failed", "stopped") else "unknown"

    def agent(agent_id: str) -> dict:
        return agents.setdefault(agent_id, {"id": agent_id, "name": None, "quality_before": None, "quality_after": None,
                                            "change": None, "processing_time_ms": None, "status": open_status,
                                            "error": None})
    for event in events:
        message = _first_line(event)
        if m := AGENT_NAMED_RE.match(message):
            agent(m.group(1))["name"] = m.group(2)
        elif m := AGENT_START_RE.match(message):
            agent(m.group(1))
        elif m := AGENT_DONE_RE.match(message):
            row = agent(m.group(1))
            row["status"] = m.group(2)
            if m.group(2) == "failed":
                row["error"] = m.group(3) or None
            elif ms := MS_RE.search(m.group(3)):
                row["processing_time_ms"] = int(ms.group(1))
        elif m := AGENT_NO_DATA_RE.match(message):
            agent(m.group(1)).update(status="skipped", error=message)
    if events:
        for row in agents.values():
            _add_quality(s, row, events[0]["timestamp"], events[-1]["timestamp"])
    return list(agents.values())


def _add_quality(s: OrchestratorState, row: dict, start: datetime, end: datetime) -> None:
    before = after = None
    for point in s.quality_points(row["id"]):  # oldest first
        if point["timestamp"] < start:
            before = point
        elif point["timestamp"] <= end:
            after = point
    row["name"] = row["name"] or s.agent_name(row["id"])
    row["quality_before"] = before.get("score") if before else None
    row["quality_after"] = after.get("score") if after else None
    if row["quality_before"] is not None and row["quality_after"] is not None:
        row["change"] = round(row["quality_after"] - row["quality_before"], 2)
    if row["processing_time_ms"] is None and after is not None and isinstance(after.get("time_ms"), int):
        row["processing_time_ms"] = after["time_ms"]


def errors_of(s: OrchestratorState, events: list[dict]) -> list[dict]:
    """The run's WARNING and worse lines, a traceback joined to its line."""
    return [{"timestamp": s.iso(e["timestamp"]), "level": e["level"], "message": e["message"]}
            for e in events if e["level"] in ERROR_LEVELS]


def phase_change(phases: list[dict], previous: list[dict]) -> dict[str, Optional[float]]:
    """{phase: this run's duration minus the previous run's} for every phase, null where either is unknown."""
    now = {p["name"]: p["duration_seconds"] for p in phases}
    before = {p["name"]: p["duration_seconds"] for p in previous}
    return {key: round(now[key] - before[key], 2) if now.get(key) is not None and before.get(key) is not None
            else None for key in PHASE_KEYS}


def output_tail(s: OrchestratorState, session: Optional[dict]) -> list[str]:
    """The last OUTPUT_TAIL_LINES lines of a dashboard session's command output ([] when unreadable)."""
    if not session or not session["output_path"]:
        return []
    lines, problems = tail_lines(session["output_path"], OUTPUT_TAIL_LINES)
    s.warnings.extend(problems)
    return lines


def record(s: OrchestratorState, run: dict, previous: Optional[dict], session: Optional[dict]) -> dict:
    """The record of `run` (a history row); `previous` is the history row before it, if any; `session`
    the dashboard session that started it (TrainingController.session), if any."""
    events = run_events(s, run)
    if not events:
        s.warnings.append(f"run {run['run_id']}: none of its lines are in the run logs (rotated away, or the run "
                          "never logged): its phases, agents and errors are not known")
    phases = phases_of(s, events, run["status"])
    data = {k: run[k] for k in ("run_id", "origin", "session_id", "status", "started_at", "finished_at",
                                "duration_seconds", "overall_quality", "quality_change_percent",
                                "started_by", "stopped_by")}
    data.update(phases=phases, agents=agents_of(s, events, run["status"]), errors=errors_of(s, events),
                output_tail=output_tail(s, session) if run["session_id"] is not None else None, previous=None)
    if previous is not None:
        earlier = phases_of(s, run_events(s, previous), previous["status"])
        data["previous"] = {"run_id": previous["run_id"], "status": previous["status"],
                            "overall_quality": previous["overall_quality"],
                            "phase_duration_change": phase_change(phases, earlier)}
    return data
