"""The answers of the metrics endpoints: quality per day (one series per agent, aligned to the days), one
metric's history, the agents' comparison and the trends."""
from __future__ import annotations

from typing import Optional

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, model_validator
from pydantic_core import PydanticCustomError

from dashboard.contract.shapes import Num, Shape, Trend, WithWarnings


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
