"""The response shapes of the API, defined once.

Every key is required (present in every answer); values the data does not say
are null. Used by the tests to check the local provider, and by the cloud
provider to check upstream answers.

One module per group, every name found here too (`from dashboard.contract import X`): shapes.py (Payload,
Answer, Shape, WithWarnings and the shared value types), agents.py (dashboard and agents), training.py,
metrics.py, system.py (system, logs, alerts, audit, storyboard, the API itself) and bodies.py (request
bodies); RESPONSES below.
"""
from __future__ import annotations

from dashboard.contract.shapes import AgentStatus, Answer, Num, Payload, Phase, Shape, Time, Trend, WithWarnings
from dashboard.contract.agents import (
    AgentConfig, AgentDetail, AgentsHealth, AgentStatusRow, Overview, QualityPoint, QuickStats,
)
from dashboard.contract.training import (
    PhaseDurations, PreviousRun, RunAgent, RunLogLine, RunPhase, SessionStatus, TrainingRun, TrainingRunRecord,
    TrainingSchedule, TrainingSession, TrainingStarted, TrainingStatus,
)
from dashboard.contract.metrics import (
    AgentTrend, ComparisonRow, MetricHistory, MetricPoint, MetricsQuality, Series, Trends,
)
from dashboard.contract.system import (
    Alert, ApiStatus, AuditEntry, EndpointInfo, HealthHistory, HealthSample, LogEvent, NotificationDelivery,
    NotificationTestQueued, Project, ProjectSummary, Scene, SystemHealth, TrainingLogs,
)
from dashboard.contract.bodies import AckAlert, NewProject, NewScene, StartTraining

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
