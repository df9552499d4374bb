"""Query-parameter and path-id checks shared by the views; each failure is a 400 naming the input.

An endpoint's query parameters are a pydantic model (queries.py) named in its row (endpoints.py): the
response cache keys its answers by that model's fields alone, so a parameter nobody reads (a browser's
`_=` cache-buster) is ignored, never a 400, even repeated. read_query applies the checks below to each
field; a field given more than once (`days=7&days=8`) is a 400 naming it, whatever the values.
"""
from __future__ import annotations

import re
import typing
from typing import Literal, Optional

import annotated_types
from flask import current_app, request
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from werkzeug.routing import BaseConverter, IntegerConverter

from dashboard.web.errors import ApiError

ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
INT_RE = re.compile(r"^[0-9]{1,9}\Z")
MAX_OFFSET = 100_000     # largest `offset` of a paged list
PROJECTS_PAGE = 100      # storyboard projects per page by default


class IntSpec(typing.NamedTuple):
    """An integer query field: bounds and default."""

    default: int
    lo: int
    hi: int


class ChoiceSpec(typing.NamedTuple):
    """A choice query field: the choices (lower case) and the default (None: no filter)."""

    default: Optional[str]
    choices: tuple[str, ...]


def field_spec(field: FieldInfo) -> IntSpec | ChoiceSpec:
    """What a query model's field accepts: an integer in bounds, or one of some words."""
    choices = [arg for arg in typing.get_args(field.annotation) if typing.get_origin(arg) is Literal]
    if typing.get_origin(field.annotation) is Literal or choices:
        literal = field.annotation if typing.get_origin(field.annotation) is Literal else choices[0]
        return ChoiceSpec(field.default, typing.get_args(literal))
    if field.annotation is int:
        lo = next(m.ge for m in field.metadata if isinstance(m, annotated_types.Ge))
        hi = next(m.le for m in field.metadata if isinstance(m, annotated_types.Le))
        return IntSpec(field.default, lo, hi)
    raise TypeError(f"a query field is an int with ge/le or a Literal of words, not {field.annotation!r}")


def read_query(model: type[BaseModel], args) -> BaseModel:
    """`model` filled from the query string `args` (a MultiDict), each field given at most once and
    checked; 400 naming the first bad one."""
    values = {}
    for name, field in model.model_fields.items():
        if len(args.getlist(name)) > 1:
            raise ApiError(400, f"{name} must be given at most once, got {len(args.getlist(name))} values", name)
        spec, raw = field_spec(field), args.get(name)
        if isinstance(spec, IntSpec):
            values[name] = check_int(name, raw, *spec)
        else:
            values[name] = check_choice(name, raw, spec.choices, spec.default)
    return model.model_validate(values)


def query(model: type[BaseModel]) -> BaseModel:
    """The request's query parameters as `model`, which the endpoint's row must declare as its query model."""
    row = current_app.extensions.get("endpoints", {}).get(request.endpoint)
    if row is None or row.query is not model:
        # A value the cache key leaves out would let one answer stand for another.
        raise RuntimeError(f"{request.endpoint} reads query model {model.__name__} without declaring it (its row)")
    return read_query(model, request.args)


def check_int(name: str, raw: Optional[str], default: int, lo: int, hi: int) -> int:
    """`raw` (query parameter `name`) as an int in [lo, hi], or `default` when absent."""
    if raw is None:
        return default
    if not INT_RE.match(raw):  # plain ASCII digits only: int() would also take "1_0", "+5" or " 5"
        raise ApiError(400, f"{name} must be an integer {lo}-{hi}, got {raw[:40]!r}", name)
    value = int(raw)
    if not lo <= value <= hi:
        raise ApiError(400, f"{name} must be an integer {lo}-{hi}, got {value}", name)
    return value


def check_choice(name: str, raw: Optional[str], choices: tuple[str, ...], default: Optional[str]) -> Optional[str]:
    """`raw` (query parameter `name`) if it is one of `choices` (case-insensitive; empty is absent), else 400."""
    if raw is None or raw == "":
        return default
    value = raw.strip().lower()
    if value not in choices:
        raise ApiError(400, f"{name} must be one of {', '.join(choices)}, got {raw[:40]!r}", name)
    return value


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
