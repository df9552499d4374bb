"""The answers of the training endpoints: the status of the running run, the runs' history and one run's
record, the sessions the dashboard started and stopped, the schedule."""
from __future__ import annotations

from typing import Literal, Optional

from dashboard.contract.shapes import Num, Phase, Shape, Time, WithWarnings


class PhaseDurations(Shape):
    harvesting: Num
    validation: Num
    agent_training: Num
    production: Num
    monitoring: Num


class TrainingStatus(WithWarnings):
    is_running: bool
    current_phase: Optional[Phase]
    progress_percent: Num
    current_agent: Optional[str]
    estimated_time_remaining_sec: Optional[int]
    started_at: Time
    phase_durations: PhaseDurations
    session_id: Optional[int]  # the running dashboard-started session, else null


class TrainingRun(Shape):
    """One run of GET /api/training/history: `run_id` its id for /api/training/runs/<run_id>; `session_id`
    the dashboard session that started it, null for a run from cron or by hand."""

    run_id: str
    date: str
    started_at: Time
    finished_at: Time
    duration_seconds: Num
    overall_quality: Num
    quality_change_percent: Num
    agents_trained: Optional[int]
    agents_failed: Optional[int]
    status: str
    error: Optional[str]
    session_id: Optional[int]
    origin: Literal["orchestrator", "dashboard"]
    started_by: Optional[str]  # the API key's name (or anonymous) that started it; null for cron or by hand
    stopped_by: Optional[str]  # the API key's name (or anonymous) that asked it to stop, else null


class RunPhase(Shape):
    name: str  # harvesting, validation, agent_training, production, monitoring, cleanup
    started_at: Time
    finished_at: Time
    duration_seconds: Num
    status: str  # completed; else the run's status (running, failed, stopped) or unknown


class RunAgent(Shape):
    id: str
    name: Optional[str]
    quality_before: Num
    quality_after: Num
    change: Num  # quality_after - quality_before
    processing_time_ms: Optional[int]
    status: str  # completed, failed, skipped; else the run's status or unknown
    error: Optional[str]


class RunLogLine(Shape):
    timestamp: Time
    level: str
    message: str  # a traceback joined to its line


class PreviousRun(Shape):
    run_id: str
    status: str
    overall_quality: Num
    phase_duration_change: dict[str, Num]  # this run's phase duration minus the previous run's (s)


class TrainingRunRecord(WithWarnings):
    """GET /api/training/runs/<run_id>: one run with its phases, agents and errors from the run log."""

    run_id: str
    origin: Literal["orchestrator", "dashboard"]
    session_id: Optional[int]
    status: str
    started_at: Time
    finished_at: Time
    duration_seconds: Num
    overall_quality: Num
    quality_change_percent: Num
    phases: list[RunPhase]
    agents: list[RunAgent]
    errors: list[RunLogLine]
    output_tail: Optional[list[str]]  # the last 100 lines of a dashboard session's command output
    previous: Optional[PreviousRun]
    started_by: Optional[str]  # as in the history
    stopped_by: Optional[str]


SessionStatus = Literal["running", "stopping", "completed", "failed", "stopped"]


class TrainingStarted(WithWarnings):
    """POST /api/training/start answer (202)."""

    session_id: int
    status: Literal["running"]
    started_at: str


class TrainingSession(WithWarnings):
    """A training session: GET /api/training/session/<id>, POST /api/training/stop (status "stopping" = 202)."""

    session_id: int
    status: SessionStatus
    origin: str
    started_at: Time
    ended_at: Time
    duration_seconds: Num
    exit_code: Optional[int]
    error_message: Optional[str]
    pid: Optional[int]  # null through a cloud proxy, as are command and output_path (the upstream's own)
    command: Optional[str]
    output_path: Optional[str]
    started_by: Optional[str]
    stopped_by: Optional[str]


class TrainingSchedule(WithWarnings):
    schedule: Optional[str]
    description: Optional[str]
    enabled: Optional[bool]
    next_run: Time
    timezone: str
