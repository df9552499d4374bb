"""The response shapes of the API, defined once.

Every key is required (present in every answer); values the data does not say
are null. Used by the tests to check the local provider, and by the cloud
provider to check upstream answers.
"""
from __future__ import annotations

from typing import Literal, NamedTuple, Optional

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, model_validator
from pydantic_core import PydanticCustomError

Num = Optional[float]
Time = Optional[str]  # ISO 8601 UTC with Z
# "starting": a run has begun, its first phase has not (yet) shown in the log.
Phase = Literal["idle", "starting", "harvesting", "validation", "agent_training", "production", "monitoring", "cleanup"]
AgentStatus = Literal["online", "offline", "training", "error"]
Trend = Optional[Literal["improving", "stable", "declining"]]


class Payload(NamedTuple):
    """What a provider read returns: the response body and the warnings met while building it."""

    data: object
    warnings: list[str]


class Answer(Payload):
    """A Payload with its own success status: a stop still under way (202), or the cloud upstream's status."""

    def __new__(cls, data, warnings, status: int = 200):
        answer = super().__new__(cls, data, warnings)
        answer.status = status
        return answer


class Shape(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WithWarnings(Shape):
    warnings: list[str]


class Overview(WithWarnings):
    current_phase: Optional[Phase]
    overall_quality: Num
    last_training: Time
    next_training: Time
    agents_trained: Optional[int]
    training_speed_ms: Optional[int]
    improvements: dict[str, Num]
    quality_trend: Trend


class QuickStats(WithWarnings):
    agents_online: int
    agents_total: int
    overall_quality: Num
    last_training: Time
    training_running: bool
    active_alerts: int
    errors_24h: int


class AgentStatusRow(Shape):
    id: str
    name: str
    status: AgentStatus
    quality_score: Num
    last_updated: Time
    processing_time_ms: Optional[int]
    improvement: Num
    errors: int


class QualityPoint(Shape):
    timestamp: str
    score: Num
    improvement: Num
    time_ms: Optional[int]


class AgentConfig(Shape):
    enabled: Optional[bool]
    priority: Optional[str]
    description: Optional[str]


class AgentDetail(AgentStatusRow):
    title: Optional[str]
    module: Optional[str]
    config: AgentConfig
    quality_history: list[QualityPoint]
    warnings: list[str]


class AgentsHealth(WithWarnings):
    overall_status: Literal["healthy", "warning", "critical"]
    total: int
    by_status: dict[AgentStatus, int]
    quality_threshold: float
    below_threshold: list[str]
    average_quality: Num


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


class MetricPoint(Shape):
    timestamp: str
    value: Num
    agent: Optional[str]


class MetricHistory(WithWarnings):
    metric: str
    days: int
    points: list[MetricPoint]


class ComparisonRow(Shape):
    id: str
    name: str
    quality_score: Num
    processing_time_ms: Optional[int]
    improvement: Num
    rank: Optional[int]


class AgentTrend(Shape):
    latest: Num
    moving_average_7d: Num
    direction: Trend


class Trends(WithWarnings):
    timestamps: list[str]  # every day of the window, oldest first, as for metrics_quality
    system: list[Num]
    moving_average_7d: list[Num]
    direction: Trend
    change: Num
    agents: dict[str, AgentTrend]


class SystemHealth(WithWarnings):
    cpu_percent: Num
    memory_percent: Num
    disk_percent: Num
    uptime_seconds: Optional[int]
    uptime_hours: Num
    active_connections: Optional[int]
    timestamp: str


class HealthSample(Shape):
    timestamp: str
    cpu_percent: Num
    memory_percent: Num
    disk_percent: Num
    uptime_seconds: Optional[int]
    active_connections: Optional[int]


class HealthHistory(WithWarnings):
    hours: int
    sample_seconds: Optional[int]
    samples: list[HealthSample]


class LogEvent(Shape):
    timestamp: Time
    level: str
    source: str
    message: str


class TrainingLogs(WithWarnings):
    events: list[LogEvent]
    limit: int
    offset: int
    has_more: bool


class Alert(Shape):
    id: str
    severity: Literal["warning", "critical"]
    source: str
    message: str
    since: Time
    acknowledged: bool  # POST /api/system/alerts/<id>/ack; false again once the ack's minutes pass
    acknowledged_at: Time
    note: Optional[str]


class AckAlert(Shape):
    """POST /api/system/alerts/<alert_id>/ack body (optional): a note, and minutes after which the ack lapses
    (absent: until the alert clears)."""

    note: Optional[str] = Field(default=None, max_length=500)
    minutes: Optional[int] = Field(default=None, ge=1, le=10080)


class NotificationDelivery(Shape):
    """One notification to one webhook target (GET /api/system/notifications)."""

    delivery_id: str
    event: Literal["alert.raised", "alert.cleared", "training.failed", "training.completed", "test"]
    alert_id: Optional[str]
    target: str  # the target's host (and port), never its path or query
    status: Literal["pending", "sent", "failed"]
    attempts: int
    last_error: Optional[str]
    created_at: str
    sent_at: Time


class NotificationTestQueued(WithWarnings):
    """POST /api/system/notifications/test: a test notification queued for every target."""

    queued: int
    targets: list[str]


class AuditEntry(Shape):
    """One POST under /api/ of GET /api/system/audit: who (the key's name; anonymous while no key exists;
    null when no valid key came), from where, and the status it was answered."""

    timestamp: str
    key: Optional[str]
    client: Optional[str]
    method: str
    path: str
    status: int


class Scene(Shape):
    position: int
    title: str
    description: Optional[str]
    duration_sec: float


class ProjectSummary(Shape):
    id: str
    name: str
    description: Optional[str]
    scene_count: int
    total_duration_sec: float
    created_at: str
    updated_at: str


class Project(ProjectSummary):
    scenes: list[Scene]
    warnings: list[str]


class ApiStatus(Shape):
    status: Literal["ok", "degraded", "error"]
    version: str
    environment: str
    provider: str
    uptime_seconds: int
    database: Literal["ok", "error"]
    data_source: Literal["ok", "degraded", "error"]


class EndpointInfo(Shape):
    path: str
    methods: list[str]
    description: str


class NewScene(Shape):
    title: str = Field(min_length=1, max_length=200)
    description: Optional[str] = Field(default=None, max_length=2000)
    duration_sec: float = Field(gt=0, le=86400)


class NewProject(Shape):
    """POST /api/storyboard/project/create body."""

    name: str = Field(min_length=1, max_length=200)
    description: Optional[str] = Field(default=None, max_length=2000)
    scenes: list[NewScene] = Field(default_factory=list, max_length=500)


class StartTraining(Shape):
    """POST /api/training/start body (optional): {"force": true} starts despite a stale log run."""

    force: StrictBool = False


Series = list[Optional[StrictFloat]]  # a number or null per day; never a string or a boolean


class MetricsQuality(BaseModel):
    """Daily quality over `days`: `timestamps` (dates), `system` and one array per agent id, all aligned to
    `timestamps`, null where a day has no score."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, Series] = Field(init=False)  # one series per agent id

    timestamps: list[str]
    system: Series
    warnings: list[str]

    @model_validator(mode="after")
    def _aligned(self) -> "MetricsQuality":
        for key, values in {"system": self.system, **(self.__pydantic_extra__ or {})}.items():
            if len(values) != len(self.timestamps):
                raise PydanticCustomError("misaligned", "{key}: {count} values for {length} timestamps",
                                          {"key": key, "count": len(values), "length": len(self.timestamps)})
        return self


# The answer of each endpoint by its view name (a create answers as the resource it stores); endpoints.py
# names the same models in its rows, and the tests check answers by these names.
RESPONSES = {
    "dashboard_overview": Overview,
    "quick_stats": QuickStats,
    "agents_status": list[AgentStatusRow],
    "agent_detail": AgentDetail,
    "agents_health": AgentsHealth,
    "training_status": TrainingStatus,
    "training_history": list[TrainingRun],
    "training_run": TrainingRunRecord,
    "training_schedule": TrainingSchedule,
    "training_start": TrainingStarted,
    "training_stop": TrainingSession,
    "training_session": TrainingSession,
    "metrics_quality": MetricsQuality,
    "metric_history": MetricHistory,
    "metrics_comparison": list[ComparisonRow],
    "metrics_trends": Trends,
    "system_health": SystemHealth,
    "health_history": HealthHistory,
    "recent_logs": list[LogEvent],
    "system_errors": list[LogEvent],
    "system_alerts": list[Alert],
    "system_audit": list[AuditEntry],
    "training_logs": TrainingLogs,
    "storyboard_projects": list[ProjectSummary],
    "storyboard_project": Project,
    "api_status": ApiStatus,
    "endpoints": list[EndpointInfo],
}
