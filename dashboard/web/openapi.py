"""GET /api/openapi.json (an OpenAPI 3.1 document) and GET /api/docs (a page that shows it).

The document is generated at request time from the endpoint table, never written by hand:
- paths, methods and path parameters from the app's url_map (so a route added anywhere shows up), each
  route's summary, query model, body model, success codes and answer from its row (endpoints.py);
- response and request-body schemas from dashboard/contract/, through pydantic's JSON Schema (the same models
  the cloud provider checks upstream answers against and the tests hold the local provider to), query
  parameters from the query models (queries.py) as validation.read_query checks them;
- the error answers from the rules of errors.py, auth.py (and the key settings), hardening.py, database.py and
  gunicorn_worker.py (see `_errors`).
"""
from __future__ import annotations

import copy
import functools
import typing

from flask import current_app, render_template, url_for
from pydantic import TypeAdapter

from dashboard.web import auth
from dashboard import contract
from dashboard.web import endpoints
from dashboard.config import VERSION
from dashboard.web.endpoints import Endpoint
from dashboard.web.validation import ID_RE, IntSpec, field_spec

REF = "#/components/schemas/{model}"
SQLITE_MAX_INT = 2**63 - 1
METHODS = ("get", "post", "put", "patch", "delete")


def query_parameters(model) -> list[dict]:
    """The OpenAPI parameters of a query model, as validation.read_query checks them."""
    params = []
    for name, field in (model.model_fields.items() if model is not None else ()):
        spec, what = field_spec(field), field.description
        if isinstance(spec, IntSpec):
            params.append({"name": name, "in": "query", "required": False,
                           "description": f"{what} ({spec.lo}-{spec.hi}, default {spec.default})",
                           "schema": {"type": "integer", "minimum": spec.lo, "maximum": spec.hi,
                                      "default": spec.default}})
            continue
        # validation.check_choice: case-insensitive, and an empty value counts as absent
        schema: dict = {"type": "string", "enum": [*spec.choices, ""]}
        if spec.default is not None:
            schema["default"] = spec.default
        params.append({"name": name, "in": "query", "required": False, "schema": schema,
                       "description": f"{what}: one of {', '.join(spec.choices)} (case-insensitive); empty or "
                                      "absent: " + (spec.default if spec.default else "no filter")})
    return params


# --- answers that are not one contract model: a row's `response` names its kind ---

JSON_OBJECT = {"application/json": {"schema": {"type": "object"}}}
HTML = {"text/html": {"schema": {"type": "string"}}}


def _export_content(schemas: dict) -> dict:
    return {"application/json": {"schema": {"type": "array", "items": {"$ref": REF.format(model="LogEvent")}}},
            "text/csv": {"schema": {"type": "string", "description": "header timestamp,level,source,message"}},
            "application/x-ndjson": {"schema": {"type": "string", "description": "one LogEvent JSON per line"}}}


# The stream's events: event name -> the contract model its `data` is.
STREAM_EVENTS = {"training": contract.TrainingStatus, "health": contract.SystemHealth,
                 "alert": list[contract.Alert], "log": contract.LogEvent}


def _stream_content(schemas: dict) -> dict:
    """text/event-stream, whose `schema` is one event as an SSE client parses it (OpenAPI 3.1 has no
    `itemSchema`; schemathesis reads a 3.1 stream's `schema` so): `event` names it, `data` is JSON."""
    events = [{"properties": {"event": {"const": event}, "data": {
        "contentMediaType": "application/json", "contentSchema": schemas[shape]}}} for event, shape in STREAM_EVENTS.items()]
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


CONTENT = {
    "html": lambda schemas: HTML,
    "json_object": lambda schemas: JSON_OBJECT,
    "document": lambda schemas: {"application/json": {"schema": {"type": "object", "description": "this document"}}},
    "prometheus": lambda schemas: {"text/plain": {"schema": {"type": "string",
                                                             "description": "Prometheus text format"}}},
    "sse": _stream_content,
    "download": _export_content,
}
SUCCESS_TEXT = {200: "OK", 201: "Created", 202: "Accepted: under way (the run started, or is still stopping)",
                503: "Not ready"}
ERRORS = {
    304: "Not Modified: the `If-None-Match` ETag matches (no body)",
    400: "A bad query parameter, path id or body; the message names it",
    401: "Missing or wrong API key (`Authorization: Bearer <API_KEY>`)",
    403: "The key lacks the scope this needs (the message names it); a cloud proxy without keys of its own"
         " refuses writes (docs/access.md)",
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


def openapi_path(rule: str) -> str:
    """A Flask rule as an OpenAPI path: `/a/<int:id>/<name>` -> `/a/{id}/{name}`."""
    return endpoints.RULE_ARG.sub(lambda m: "{" + m["name"] + "}", rule)


def _path_params(rule: str, converters: dict) -> list[dict]:
    params = []
    for match in endpoints.RULE_ARG.finditer(rule):
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


def _is_model(response: object) -> bool:
    return response is not None and not isinstance(response, str)


@functools.lru_cache(maxsize=8)
def contract_schemas(rows: tuple[Endpoint, ...]) -> tuple[dict, dict[str, dict]]:
    """({contract model or body model: schema}, components.schemas) of the rows, through pydantic."""
    shapes = [row.response for row in rows if _is_model(row.response)] + [row.body for row in rows if row.body]
    shapes += [*STREAM_EVENTS.values(), contract.LogEvent]
    inputs = [(shape, "validation", TypeAdapter(shape)) for shape in dict.fromkeys(shapes)]
    mapping, definitions = TypeAdapter.json_schemas(inputs, ref_template=REF)
    components = dict(definitions.get("$defs", {}))
    if "Error" in components:
        raise RuntimeError("dashboard/contract/ defines Error, which openapi.py defines too")
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
    return {shape: schema for (shape, _), schema in mapping.items()}, components


def _success(row: Endpoint | None, method: str, path: str, schemas: dict) -> dict:
    """{status: response object} of a route's success answers (any content for a route without a row)."""
    if row is None:
        return {"200": {"description": "OK", "content": {"*/*": {}}}}
    download = row.response == "download"
    responses = {}
    for status in row.codes:
        if _is_model(row.response):
            content = {"application/json": {"schema": schemas[row.response]}}
        else:
            content = CONTENT[row.response](schemas)
        response: dict = {"description": SUCCESS_TEXT.get(status, "OK"), "content": content}
        if _is_model(row.response) and typing.get_origin(row.response) is list:
            response["headers"] = {"X-Data-Warnings": {
                "description": "JSON list of what could not be read (present when non-empty)", **STRING}}
        if download:
            response["headers"] = {"Content-Disposition": {"description": "attachment; filename=...", **STRING}}
        if method == "get" and path.startswith("/api/") and status == 200 and "application/json" in content \
                and not download:
            response.setdefault("headers", {})["ETag"] = {"description": "for If-None-Match", **STRING}
        responses[str(status)] = response
    return responses


def _errors(row: Endpoint | None, method: str, path: str, params: list[dict], json_ok: bool,
            keyed: bool) -> list[int]:
    """The other statuses a route can answer, from its row and the app's rules (auth.py, hardening.py,
    errors.py, database.py)."""
    api = path.startswith("/api/")
    body = row is not None and row.body is not None and method == "post"
    codes = {414, 431}  # gunicorn's own refusals, any path (gunicorn_worker.py)
    if any(p["in"] == "query" or p["schema"].get("type") == "string" for p in params) or body:
        codes.add(400)
    if keyed:
        codes.add(401)
    if row is not None and row.scope in ("operate", "admin"):  # a key without the scope; a proxy without keys
        codes.add(403)
    if any(p["in"] == "path" for p in params):
        codes.add(404)
    if any("not" in p["schema"] for p in params if p["in"] == "path"):
        codes.add(405)
    if row is not None:
        codes.update(row.errors)
    if body:
        codes.update((413, 415))
    if api and method == "post":
        codes.add(429)
    if api and row is not None and row.provider:  # the provider's failures: its upstream, its database
        codes.update((502, 503, 504))
    if api and method == "get" and json_ok:  # hardening.revalidate_json
        codes.add(304)
    return sorted(codes)


def _operation(rule, row: Endpoint | None, method: str, app) -> dict:
    view = row.name if row is not None else rule.endpoint.rpartition(".")[2]
    path = openapi_path(rule.rule)
    schemas = contract_schemas(tuple(endpoints.rows_of(app).values()))[0]
    params = _path_params(rule.rule, rule.map.converters) + query_parameters(row.query if row else None)
    segments = path.strip("/").split("/")
    tag = segments[1] if path.startswith("/api/") and len(segments) > 2 else (
        "service" if path.startswith("/api/") else "page" if path == "/" else "operations")
    operation: dict = {"operationId": view, "summary": endpoints.summary(app, rule, row), "tags": [tag]}
    doc = (app.view_functions[rule.endpoint].__doc__ or "").strip().splitlines()
    if len(doc) > 1:
        operation["description"] = "\n".join(line.strip() for line in doc[1:]).strip()
    if params:
        operation["parameters"] = params
    if row is not None and row.body is not None and method == "post":
        operation["requestBody"] = {"required": row.body_required, "content": {
            "application/json": {"schema": schemas[row.body]}}}
    # never without API_KEY: named keys come and go while the document is generated once
    keyed = auth.key_required(app.config, auth.scope_of(row, method.upper(), path), method.upper())
    if keyed:
        operation["security"] = [{"bearerAuth": []}]
    responses = _success(row, method, path, schemas)
    json_ok = "application/json" in responses.get("200", {}).get("content", {}) and (
        row is None or row.response != "download")
    for code in _errors(row, method, path, params, json_ok, keyed):
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


def document(app) -> dict:
    """The OpenAPI 3.1 document of `app` as it is now: every route, every contract shape, the key its settings need."""
    paths: dict[str, dict] = {}
    for rule, row in endpoints.listing(app):
        item = paths.setdefault(openapi_path(rule.rule), {})
        for method in sorted(m.lower() for m in rule.methods or ()):
            if method in METHODS:
                item[method] = _operation(rule, row, method, app)
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
                "The dashboard of an ML agent-training orchestrator: one JSON contract (dashboard/contract/) "
                "whether the data comes from the orchestrator's files or from a cloud instance of this API. "
                "Errors are `{\"error\", \"status\"}`; times are ISO 8601 UTC with `Z`; object answers carry "
                "`warnings`, list answers carry them in the `X-Data-Warnings` header. " + _key_text(app.config)
                + " This document is generated from the running server's routes and settings."),
        },
        "paths": paths,
        "components": {
            "schemas": dict(sorted(contract_schemas(tuple(endpoints.rows_of(app).values()))[1].items())),
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
        return ("This server sets an API key: every request under /api/ but GET /api/status, and /metrics, need"
                " it (bearer).")
    return ("This server sets an API key: every POST, and GET /api/system/audit, need it (bearer); other reads"
            " are open.")


def openapi_json():
    """This API as an OpenAPI 3.1 document, generated from the routes and the response contract."""
    body = current_app.extensions.get("openapi_json")
    if body is None:  # the routes are fixed once the app serves: generated once
        body = current_app.extensions["openapi_json"] = current_app.json.dumps(document(current_app)) + "\n"
    return current_app.response_class(body, mimetype="application/json")


def api_docs():
    """The API reference: a page that renders /api/openapi.json (Swagger UI, served from this server)."""
    return render_template("api_docs.html", spec_url=url_for("openapi.openapi_json"))
