"""Query-parameter and path-id checks shared by the views; each failure is a 400 naming the input.

A view declares the query parameters it reads (`@query_params`): the response cache keys its answers
by those alone, so a parameter nobody reads (a browser's `_=` cache-buster) is ignored, never a 400.
"""
from __future__ import annotations

import re

from flask import current_app, request
from werkzeug.routing import BaseConverter, IntegerConverter

from errors import ApiError

ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
INT_RE = re.compile(r"^[0-9]{1,9}\Z")


def query_params(*names: str):
    """Declare the query parameters a view reads; the arg helpers below read no others."""
    def declare(view):
        view.query_params = names
        return view
    return declare


def declared_params(view) -> tuple[str, ...]:
    """The query parameters `view` declared with @query_params (none if it did not)."""
    return getattr(view, "query_params", ())


def _arg(name: str):
    """The raw value of query parameter `name` (None when absent), which the view must have declared."""
    if name not in declared_params(current_app.view_functions.get(request.endpoint)):
        # A value the cache key leaves out would let one answer stand for another.
        raise RuntimeError(f"{request.endpoint} reads query parameter {name!r} without declaring it (@query_params)")
    return request.args.get(name)


def int_arg(name: str, default: int, lo: int, hi: int) -> int:
    """Return query parameter `name` as an int in [lo, hi], or `default` when absent."""
    raw = _arg(name)
    if raw is None:
        return default
    if not INT_RE.match(raw):  # plain ASCII digits only: int() would also take "1_0", "+5" or " 5"
        raise ApiError(400, f"{name} must be an integer {lo}-{hi}, got {raw[:40]!r}", name)
    value = int(raw)
    if not lo <= value <= hi:
        raise ApiError(400, f"{name} must be an integer {lo}-{hi}, got {value}", name)
    return value


def choice_arg(name: str, choices: tuple[str, ...], default: str | None) -> str | None:
    """Return query parameter `name` if it is one of `choices` (case-insensitive), else 400."""
    raw = _arg(name)
    if raw is None or raw == "":
        return default
    value = raw.strip().lower()
    if value not in choices:
        raise ApiError(400, f"{name} must be one of {', '.join(choices)}, got {raw[:40]!r}", name)
    return value


def days_arg() -> int:
    """The contract's `days` window: integer 1..365, default 7."""
    return int_arg("days", 7, 1, 365)


MAX_OFFSET = 100_000     # largest `offset` of a paged list
PROJECTS_PAGE = 100      # storyboard projects per page by default


def limit_arg(default: int = 50) -> int:
    """The contract's `limit`: integer 1..1000, default 50."""
    return int_arg("limit", default, 1, 1000)


def check_id(value: str, kind: str) -> str:
    """Return `value` if it is a safe id (`^[A-Za-z0-9_.-]{1,64}$`), else a 400 naming `kind`."""
    if not ID_RE.match(value) or value in {".", ".."}:
        raise ApiError(400, f"invalid {kind}: must match [A-Za-z0-9_.-]{{1,64}}", kind)
    return value


class AsciiIntegerConverter(IntegerConverter):
    """`<int:...>` path parts of ASCII digits only (Werkzeug's own takes any Unicode digit: U+0661 as 1)."""

    regex = r"[0-9]+"


class ProjectIdConverter(BaseConverter):
    """`<project:...>`: one path segment other than `create`, the path of the POST route beside it.

    So `/api/storyboard/project/create` is never the project `create`: a GET there is a 405 and its
    OPTIONS allows POST only. The id itself is checked by check_id (a 400 naming it).
    """

    reserved = ("create",)
    regex = r"(?!(?:%s)\Z)[^/]+" % "|".join(re.escape(word) for word in reserved)
