"""The answers of the dashboard and agents endpoints: the overview, the quick stats, the agents' rows, one
agent's detail and their health."""
from __future__ import annotations

from typing import Literal, Optional

from dashboard.contract.shapes import AgentStatus, Num, Phase, Shape, Time, Trend, WithWarnings


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
