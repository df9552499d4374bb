"""The query parameters of the API as pydantic models: each field's bounds, choices, default and meaning.

validation.read_query checks a request's query string against a model (the messages name the parameter),
openapi.py documents the same fields, and the response cache keys answers by the fields of the model an
endpoint's row declares (endpoints.py): one declaration, so the three cannot disagree. A choice field is
case-insensitive and an empty value counts as absent; an integer is plain ASCII digits.
"""
from __future__ import annotations

from typing import Annotated, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

from dashboard.web.validation import MAX_OFFSET, PROJECTS_PAGE

Level = Literal["debug", "info", "warning", "error", "critical"]
ExportFormat = Literal["json", "csv", "ndjson"]

DaysBack = Annotated[int, Field(ge=1, le=365, description="days back from today")]
EventsAtMost = Annotated[int, Field(ge=1, le=1000, description="how many events at most")]
EventsSkipped = Annotated[int, Field(ge=0, le=MAX_OFFSET, description="events to skip (newest first)")]


class Query(BaseModel):
    """Base of the query models: values as read from the query string, the others ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class Days(Query):
    days: DaysBack = 7


class Hours(Query):
    hours: Annotated[int, Field(ge=1, le=720, description="hours back from now")] = 24


class Limit(Query):
    limit: EventsAtMost = 50


class RecentLogs(Query):
    limit: EventsAtMost = 50
    level: Annotated[Optional[Level], Field(description="only events of this level")] = None


class EventPage(Query):
    limit: EventsAtMost = 50
    offset: EventsSkipped = 0


class ProjectPage(Query):
    limit: Annotated[int, Field(ge=1, le=1000, description="how many projects at most")] = PROJECTS_PAGE
    offset: Annotated[int, Field(ge=0, le=MAX_OFFSET, description="projects to skip (newest first)")] = 0


class Export(Query):
    format: Annotated[ExportFormat, Field(description="file format of the download")] = "json"
    days: DaysBack = 7


class Notifications(Query):
    limit: Annotated[int, Field(ge=1, le=1000, description="how many deliveries at most")] = 50
