"""The answers of the system, logs, storyboard and API endpoints: host health and its history, log events,
alerts and their notifications, the audit, storyboard projects, the API's status and its endpoints."""
from __future__ import annotations

from typing import Literal, Optional

from dashboard.contract.shapes import Num, Shape, Time, WithWarnings


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
