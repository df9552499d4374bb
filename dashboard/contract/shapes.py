"""The contract's building blocks: what a provider read returns (Payload, Answer), the base of every
response shape (Shape: no key beyond those declared; WithWarnings: an object answer with its warnings) and
the value types the shapes share."""
from __future__ import annotations

from typing import Literal, NamedTuple, Optional

from pydantic import BaseModel, ConfigDict


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
