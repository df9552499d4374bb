"""GET /api/openapi.json (an OpenAPI 3.1 document) and GET /api/docs (a page that shows it).

The document is generated at request time, never written by hand:
- paths, methods and path parameters from the app's url_map (so a route added anywhere shows up),
  summaries from the views' docstrings (as /api/endpoints does);
- response and request-body schemas from contract.py, through pydantic's JSON Schema (the same models
  the cloud provider checks upstream answers against and the tests hold the local provider to);
- the error answers from the rules of errors.py, auth.py (and the key settings), hardening.py, database.py and
  gunicorn_worker.py (see `_errors`).

What neither the url_map nor contract.py can tell (which view reads which query parameter, which view
answers 201/202 or another media type) is in the small tables below, keyed by view name;
tests/test_openapi.py holds them to the app's real behaviour.
"""
from __future__ import annotations

import copy
import functools
import re
import typing

from flask import Blueprint, current_app, render_template, url_for
from pydantic import TypeAdapter

import auth
import contract
from config import VERSION
from routes import EXPORT_FORMATS, LOG_LEVELS
from validation import ID_RE, MAX_OFFSET, PROJECTS_PAGE

bp = Blueprint("openapi", __name__, url_prefix="/api")

REF = "#/components/schemas/{model}"
SQLITE_MAX_INT = 2**63 - 1
METHODS = ("get", "post", "put", "patch", "delete")

# --- what the views read from the query string (validation.py's checks and their bounds) ---


def _int_param(name: str, default: int, lo: int, hi: int, what: str) -> dict:
    return {"name": name, "in": "query", "required": False, "description": f"{what} ({lo}-{hi}, default {default})",
            "schema": {"type": "integer", "minimum": lo, "maximum": hi, "default": default}}


def _choice_param(name: str, choices: tuple[str, ...], default: str | None, what: str) -> dict:
    # validation.choice_arg: case-insensitive, and an empty value counts as absent
    schema: dict = {"type": "string", "enum": [*choices, ""]}
    if default is not None:
        schema["default"] = default
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": f"{what}: one of {', '.join(choices)} (case-insensitive); empty or absent: "
                           + (default if default else "no filter")}


DAYS = _int_param("days", 7, 1, 365, "days back from today")
LIMIT = _int_param("limit", 50, 1, 1000, "how many events at most")
HOURS = _int_param("hours", 24, 1, 720, "hours back from now")
OFFSET = _int_param("offset", 0, 0, MAX_OFFSET, "events to skip (newest first)")
PROJECT_LIMIT = _int_param("limit", PROJECTS_PAGE, 1, 1000, "how many projects at most")
PROJECT_OFFSET = _int_param("offset", 0, 0, MAX_OFFSET, "projects to skip (newest first)")
LEVEL = _choice_param("level", LOG_LEVELS, None, "only events of this level")
FORMAT = _choice_param("format", EXPORT_FORMATS, "json", "file format of the download")

QUERY = {
    "training_history": (DAYS,),
    "metrics_quality": (DAYS,),
    "metric_history": (DAYS,),
    "metrics_trends": (DAYS,),
    "health_history": (HOURS,),
    "recent_logs": (LIMIT, LEVEL),
    "system_errors": (LIMIT,),
    "training_logs": (LIMIT, OFFSET),
    "export_logs": (FORMAT, DAYS),
    "storyboard_projects": (PROJECT_LIMIT, PROJECT_OFFSET),
}

# --- request bodies: view -> (contract model, required) ---

BODIES = {
    "create_storyboard_project": (contract.NewProject, True),
    "training_start": (contract.StartTraining, False),
}

# --- success answers that are not "200 with contract.RESPONSES[view]" ---
# Each value maps a status to a contract.RESPONSES name, or to a `content` object built below.

JSON_OBJECT = {"application/json": {"schema": {"type": "object"}}}
HTML = {"text/html": {"schema": {"type": "string"}}}


def _metrics_quality_schema() -> dict:
    """/api/metrics/quality has agent ids as keys (contract.py checks it by hand; so does the cloud provider)."""
    series = TypeAdapter(list[contract.Num]).json_schema()
    return {"type": "object", "title": "MetricsQuality",
            "description": "Daily quality over `days`: `timestamps` (dates), `system` and one array per agent id, "
                           "all aligned to `timestamps`, null where a day has no score.",
            "properties": {"timestamps": {"type": "array", "items": {"type": "string"}}, "system": series,
                           "warnings": {"type": "array", "items": {"type": "string"}}},
            "required": ["timestamps", "system", "warnings"], "additionalProperties": series}


def _export_content() -> dict:
    return {"application/json": {"schema": {"type": "array", "items": {"$ref": REF.format(model="LogEvent")}}},
            "text/csv": {"schema": {"type": "string", "description": "header timestamp,level,source,message"}},
            "application/x-ndjson": {"schema": {"type": "string", "description": "one LogEvent JSON per line"}}}


# The stream's events: event name -> the contract.RESPONSES answer its `data` is (or the LogEvent model).
STREAM_EVENTS = {"training": "training_status", "health": "system_health", "alert": "system_alerts",
                 "log": "LogEvent"}


def _stream_content() -> dict:
    """text/event-stream, whose `schema` is one event as an SSE client parses it (OpenAPI 3.1 has no
    `itemSchema`; schemathesis reads a 3.1 stream's `schema` so): `event` names it, `data` is JSON."""
    data = contract_schemas()[0]
    events = [{"properties": {"event": {"const": event}, "data": {
        "contentMediaType": "application/json", "contentSchema": data[shape]}}} for event, shape in STREAM_EVENTS.items()]
    return {"text/event-stream": {"schema": {
        "type": "object", "title": "ServerSentEvent", "required": ["event", "data"],
        "description": "One Server-Sent Event; the body is a stream of them, not one JSON value. `training`: the "
                       "training status (as /api/training/status), sent first and on each change; `health`: a "
                       "host health reading (as /api/system/health) every STREAM_HEALTH_SECONDS; `alert`: the "
                       "active alerts (as /api/system/alerts), first and on each change; `log`: each new log "
                       "event. Between events: `retry: 3000` first, `: ping` comments every "
                       "STREAM_HEARTBEAT_SECONDS. The stream ends after STREAM_MAX_SECONDS (browsers reconnect).",
        "properties": {"event": {"type": "string", "enum": list(STREAM_EVENTS)},
                       "data": {"type": "string", "description": "one JSON value, its shape by `event`"}},
        "oneOf": events}}}


SUCCESS = {
    "training_start": {202: "training_start"},
    "training_stop": {200: "training_stop", 202: "training_stop"},
    "create_storyboard_project": {201: "storyboard_project"},
    "metrics_quality": {200: {"application/json": {"schema": {"$ref": REF.format(model="MetricsQuality")}}}},
    "export_logs": {200: _export_content()},
    "stream": {200: _stream_content},
    "openapi_json": {200: {"application/json": {"schema": {"type": "object", "description": "this document"}}}},
    "api_docs": {200: HTML},
    "index": {200: HTML},
    "metrics": {200: {"text/plain": {"schema": {"type": "string", "description": "Prometheus text format"}}}},
    "healthz": {200: JSON_OBJECT},
    "readyz": {200: JSON_OBJECT, 503: JSON_OBJECT},
}
SUCCESS_TEXT = {200: "OK", 201: "Created", 202: "Accepted: under way (the run started, or is still stopping)",
                503: "Not ready"}

# Views of the `api` blueprint that answer without the provider (no upstream, database errors caught).
NOT_PROVIDER = frozenset({"api_status", "endpoints", "stream", "openapi_json", "api_docs"})
CONFLICTS = frozenset({"training_start", "training_stop"})
ERRORS = {
    304: "Not Modified: the `If-None-Match` ETag matches (no body)",
    400: "A bad query parameter, path id or body; the message names it",
    401: "Missing or wrong API key (`Authorization: Bearer <API_KEY>`)",
    404: "Unknown id",
    405: "A path id that is the route beside it (e.g. `create`): that route's methods only (`Allow`)",
    409: "A training conflict: a run is going (`session_id` the running session, null when the dashboard did not "
         "start it) or, for stop, none is",
    413: "Request body larger than MAX_CONTENT_LENGTH",
    414: "Under gunicorn: the request line (method, path and query) is longer than its limit_request_line "
         "(gunicorn.conf.py)",
    415: "Request body is not JSON",
    429: "Too many POSTs to this endpoint this minute (`Retry-After`, `retry_after_seconds`)",
    431: "Under gunicorn: more header fields than its limit_request_fields, or one longer than "
         "limit_request_field_size (gunicorn.conf.py)",
    502: "Cloud mode: the upstream failed, rejected the key or answered a wrong shape",
    503: "The database is unusable; in cloud mode, the upstream's circuit breaker is open (`Retry-After`); for "
         "the stream, too many streams are open",
    504: "Cloud mode: the upstream did not answer within CLOUD_TIMEOUT_SECONDS (connecting: "
         "CLOUD_CONNECT_TIMEOUT_SECONDS)",
}
STRING = {"schema": {"type": "string"}}

_RULE_ARG = re.compile(r"<(?:(?P<converter>[a-zA-Z_]+)(?:\([^)]*\))?:)?(?P<name>[a-zA-Z_][a-zA-Z0-9_]*)>")


def openapi_path(rule: str) -> str:
    """A Flask rule as an OpenAPI path: `/a/<int:id>/<name>` -> `/a/{id}/{name}`."""
    return _RULE_ARG.sub(lambda m: "{" + m["name"] + "}", rule)


def _path_params(rule: str, converters: dict) -> list[dict]:
    params = []
    for match in _RULE_ARG.finditer(rule):
        converter = match["converter"] or "default"
        reserved = getattr(converters.get(converter), "reserved", ())  # words that are routes of their own
        if reserved:
            schema = {"type": "string", "pattern": ID_RE.pattern, "not": {"enum": list(reserved)}}
            description = f"an id matching `{ID_RE.pattern}` (not `.` or `..`), other than " + \
                ", ".join(f"`{word}`" for word in reserved)
        elif converter == "int":
            schema = {"type": "integer", "minimum": 0, "maximum": SQLITE_MAX_INT}
            description = "a non-negative integer"
        elif converter == "float":
            schema, description = {"type": "number", "minimum": 0}, "a non-negative number"
        elif converter in ("default", "string"):
            schema = {"type": "string", "pattern": ID_RE.pattern}
            description = f"an id matching `{ID_RE.pattern}` (not `.` or `..`)"
        else:
            schema, description = {"type": "string"}, ""
        params.append({"name": match["name"], "in": "path", "required": True, "schema": schema,
                       "description": description})
    return params


@functools.cache
def contract_schemas() -> tuple[dict[str, dict], dict[str, dict]]:
    """({RESPONSES name or body model name: schema}, components.schemas), from contract.py's pydantic models."""
    inputs = [(name, "validation", TypeAdapter(shape)) for name, shape in contract.RESPONSES.items()]
    inputs += [(model.__name__, "validation", TypeAdapter(model)) for model, _ in BODIES.values()]
    inputs += [("LogEvent", "validation", TypeAdapter(contract.LogEvent))]
    mapping, definitions = TypeAdapter.json_schemas(inputs, ref_template=REF)
    components = dict(definitions.get("$defs", {}))
    for extra in ("Error", "MetricsQuality"):
        if extra in components:
            raise RuntimeError(f"contract.py defines {extra}, which openapi.py defines too")
    components["MetricsQuality"] = _metrics_quality_schema()
    components["Error"] = {
        "type": "object", "title": "Error", "required": ["error", "status"], "additionalProperties": True,
        "description": "Every error under /api/: the message names what is wrong; some carry more keys.",
        "properties": {
            "error": {"type": "string"}, "status": {"type": "integer", "description": "the HTTP status"},
            "session_id": {"anyOf": [{"type": "integer"}, {"type": "null"}],
                           "description": "409 of training start: the running session (null: not the dashboard's)"},
            "retry_after_seconds": {"type": "integer", "description": "429: seconds until the next minute"},
        },
    }
    return {name: schema for (name, _), schema in mapping.items()}, components


def _json(name: str) -> dict:
    return {"application/json": {"schema": contract_schemas()[0][name]}}


def _success(view: str, method: str, path: str) -> dict:
    """{status: response object} of a view's success answers."""
    table = SUCCESS.get(view) or ({200: view} if view in contract.RESPONSES else {200: {"*/*": {}}})
    responses = {}
    for status, spec in table.items():
        content = _json(spec) if isinstance(spec, str) else spec() if callable(spec) else spec
        response: dict = {"description": SUCCESS_TEXT.get(status, "OK"), "content": content}
        if isinstance(spec, str) and typing.get_origin(contract.RESPONSES[spec]) is list:
            response["headers"] = {"X-Data-Warnings": {
                "description": "JSON list of what could not be read (present when non-empty)", **STRING}}
        if view == "export_logs":
            response["headers"] = {"Content-Disposition": {"description": "attachment; filename=...", **STRING}}
        if method == "get" and path.startswith("/api/") and status == 200 and "application/json" in content \
                and view != "export_logs":
            response.setdefault("headers", {})["ETag"] = {"description": "for If-None-Match", **STRING}
        responses[str(status)] = response
    return responses


def _errors(view: str, blueprint: str, method: str, path: str, params: list[dict], body: bool,
            json_ok: bool, keyed: bool) -> list[int]:
    """The other statuses a view can answer, from the app's rules (auth.py, hardening.py, errors.py, database.py)."""
    api = path.startswith("/api/")
    codes = {414, 431}  # gunicorn's own refusals, any path (gunicorn_worker.py)
    if any(p["in"] == "query" or p["schema"].get("type") == "string" for p in params) or body:
        codes.add(400)
    if keyed:
        codes.add(401)
    if any(p["in"] == "path" for p in params):
        codes.add(404)
    if any("not" in p["schema"] for p in params if p["in"] == "path"):
        codes.add(405)
    if view in CONFLICTS:
        codes.add(409)
    if body:
        codes.update((413, 415))
    if api and method == "post":
        codes.add(429)
    if blueprint == "api" and view not in NOT_PROVIDER:
        codes.update((502, 503, 504))
    if view == "stream":
        codes.add(503)
    if api and method == "get" and json_ok:  # hardening.revalidate_json
        codes.add(304)
    return sorted(codes)


def _operation(rule, view_func, method: str, config) -> dict:
    blueprint, _, view = rule.endpoint.rpartition(".")
    path = openapi_path(rule.rule)
    doc = (view_func.__doc__ or "").strip().splitlines()
    params = _path_params(rule.rule, rule.map.converters) + list(QUERY.get(view, ()))
    body = BODIES.get(view) if method == "post" else None
    segments = path.strip("/").split("/")
    tag = segments[1] if path.startswith("/api/") and len(segments) > 2 else (
        "service" if path.startswith("/api/") else "page" if path == "/" else "operations")
    operation: dict = {"operationId": view, "summary": doc[0] if doc else "", "tags": [tag]}
    if len(doc) > 1:
        operation["description"] = "\n".join(line.strip() for line in doc[1:]).strip()
    if params:
        operation["parameters"] = params
    if body:
        model, required = body
        operation["requestBody"] = {"required": required, "content": {
            "application/json": {"schema": contract_schemas()[0][model.__name__]}}}
    keyed = auth.key_required(config, method.upper(), path)  # never without API_KEY: then nothing needs a key
    if keyed:
        operation["security"] = [{"bearerAuth": []}]
    responses = _success(view, method, path)
    json_ok = "application/json" in responses.get("200", {}).get("content", {}) and view != "export_logs"
    for code in _errors(view, blueprint, method, path, params, body is not None, json_ok, keyed):
        if code == 304:
            responses["304"] = {"description": ERRORS[304]}
            continue
        response = {"description": ERRORS[code],
                    "content": {"application/json": {"schema": {"$ref": REF.format(model="Error")}}}}
        if code == 401:
            response["headers"] = {"WWW-Authenticate": {"description": "Bearer", **STRING}}
        if code == 405:
            response["headers"] = {"Allow": {"description": "the methods of that route", **STRING}}
        if code == 429:
            response["headers"] = {"Retry-After": {"description": "seconds", **STRING}}
        responses.setdefault(str(code), response)
    operation["responses"] = dict(sorted(responses.items()))
    return operation


def routes(app) -> list:
    """The app's rules in path order, without the static files (as /api/endpoints lists them)."""
    return [rule for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule) if rule.endpoint != "static"]


def document(app) -> dict:
    """The OpenAPI 3.1 document of `app` as it is now: every route, every contract shape, the key its settings need."""
    paths: dict[str, dict] = {}
    for rule in routes(app):
        item = paths.setdefault(openapi_path(rule.rule), {})
        for method in sorted(m.lower() for m in rule.methods or ()):
            if method in METHODS:
                item[method] = _operation(rule, app.view_functions[rule.endpoint], method, app.config)
    operations = [(path, method, op) for path, item in paths.items() for method, op in item.items()]
    ids = [op["operationId"] for _, _, op in operations]
    for path, method, op in operations:
        if ids.count(op["operationId"]) > 1:  # one view on two rules or methods, or one name in two blueprints
            op["operationId"] = f"{method}_{path}".replace("/", "_").replace("{", "").replace("}", "")
    return copy.deepcopy({  # the schemas are cached: a caller that edits its document must not edit them
        "openapi": "3.1.0",
        "info": {
            "title": "Training Dashboard API",
            "version": VERSION,
            "description": (
                "The dashboard of an ML agent-training orchestrator: one JSON contract (contract.py) whether the "
                "data comes from the orchestrator's files or from a cloud instance of this API. Errors are "
                "`{\"error\", \"status\"}`; times are ISO 8601 UTC with `Z`; object answers carry `warnings`, "
                "list answers carry them in the `X-Data-Warnings` header. " + _key_text(app.config)
                + " This document is generated from the running server's routes and settings."),
        },
        "paths": paths,
        "components": {
            "schemas": dict(sorted(contract_schemas()[1].items())),
            **({"securitySchemes": {"bearerAuth": {
                "type": "http", "scheme": "bearer",
                "description": "`Authorization: Bearer <API_KEY>`, on the operations that list it."}}}
               if app.config.get("API_KEY") else {}),
        },
    })


def _key_text(config) -> str:
    if not config.get("API_KEY"):
        return "This server sets no API key: no request needs one."
    if config.get("REQUIRE_AUTH_FOR_READS"):
        return "This server sets an API key: every request under /api/ but GET /api/status needs it (bearer)."
    return "This server sets an API key: every POST needs it (bearer); reads are open."


@bp.get("/openapi.json")
def openapi_json():
    """This API as an OpenAPI 3.1 document, generated from the routes and the response contract."""
    body = current_app.extensions.get("openapi_json")
    if body is None:  # the routes are fixed once the app serves: generated once
        body = current_app.extensions["openapi_json"] = current_app.json.dumps(document(current_app)) + "\n"
    return current_app.response_class(body, mimetype="application/json")


@bp.get("/docs")
def api_docs():
    """The API reference: a page that renders /api/openapi.json (Swagger UI, served from this server)."""
    return render_template("api_docs.html", spec_url=url_for("openapi.openapi_json"))
