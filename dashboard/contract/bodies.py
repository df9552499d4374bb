"""The request bodies of the POST endpoints: an alert's acknowledgement, a storyboard project (with its
scenes), a training start."""
from __future__ import annotations

from typing import Optional

from pydantic import Field, StrictBool

from dashboard.contract.shapes import Shape


class AckAlert(Shape):
    """POST /api/system/alerts/<alert_id>/ack body (optional): a note, and minutes after which the ack lapses
    (absent: until the alert clears)."""

    note: Optional[str] = Field(default=None, max_length=500)
    minutes: Optional[int] = Field(default=None, ge=1, le=10080)


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
