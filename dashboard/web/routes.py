"""The routes of the server, registered from the endpoint table (endpoints.py): one generic view for the rows
without a view of their own (check the path ids and the query, validate the body, call the provider method,
answer its Payload as JSON), and the few views of their own: the page, /api/status, /api/endpoints and the
log download."""
from __future__ import annotations

import csv
import importlib
import inspect
import io
import json
import time
from typing import Callable, Iterable

from flask import Flask, Response, current_app, jsonify, render_template, request, stream_with_context
from pydantic import ValidationError

import database
from dashboard.web import endpoints
from dashboard.config import VERSION
from dashboard.contract import Payload
from dashboard.web.endpoints import Endpoint
from dashboard.web.errors import ApiError
from dashboard.web.queries import Export
from dashboard.web.validation import check_id, query

SQLITE_MAX_INT = 2**63 - 1


def provider():
    """The DataProvider chosen at start-up from ENVIRONMENT."""
    return current_app.extensions["provider"]


def respond(payload: Payload, status: int = 200):
    """JSON for a provider answer: objects carry `warnings`; lists carry them in X-Data-Warnings."""
    data, warnings = payload
    status = getattr(payload, "status", None) or status  # a contract.Answer: a stop under way, the upstream's status
    warnings = list(dict.fromkeys(warnings))
    if isinstance(data, dict):
        response = jsonify({**data, "warnings": warnings})
    else:
        response = jsonify(data)
        if warnings:
            response.headers["X-Data-Warnings"] = json.dumps(warnings)
    response.status_code = status
    return response


def request_body() -> bytes:
    """The raw body; 413 past MAX_CONTENT_LENGTH, chunked bodies included (Werkzeug cuts those silently)."""
    data = request.get_data(cache=True)
    limit = request.max_content_length
    if request.content_length is None and limit is not None and len(data) >= limit:
        if request.environ["wsgi.input"].read(1):
            raise ApiError(413, f"request body too large (limit {limit} bytes)")
    return data


def json_body() -> dict:
    """The request's JSON object body; 415 when it is not JSON, 400 when malformed or not an object."""
    if not request.is_json:
        raise ApiError(415, "request body must be JSON (Content-Type: application/json)")
    try:
        body = json.loads(request_body())
    except json.JSONDecodeError as err:
        raise ApiError(400, f"request body is not valid JSON: {err.msg} at line {err.lineno} column {err.colno}") from None
    except (ValueError, RecursionError):  # undecodable bytes, nesting too deep
        raise ApiError(400, "request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "request body must be a JSON object")
    return body


def validated(model, body: dict):
    """`body` checked against a contract model; 400 naming each bad field."""
    try:
        # strict: JSON types as the contract (and /api/openapi.json) states them, no "5" or true for a number
        return model.model_validate(body, strict=True)
    except ValidationError as err:
        fields = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in err.errors()[:10])
        raise ApiError(400, f"invalid body: {fields}") from None


def register(app: Flask, rows: Iterable[Endpoint]) -> None:
    """Add a route for each row (its own view, or the generic one) and remember the row by endpoint name."""
    for row in rows:
        view = _own_view(row) if row.view else generic_view(row, _body_parameter(row, app.extensions["provider"]))
        app.add_url_rule(row.rule, endpoint=row.endpoint, view_func=view, methods=list(row.methods))
        endpoints.rows_of(app)[row.endpoint] = row


def _own_view(row: Endpoint) -> Callable:
    """A row's own view: the function itself, or "module:function" (imported here, so no module cycle)."""
    if callable(row.view):
        return row.view
    module, _, name = row.view.partition(":")
    return getattr(importlib.import_module(module), name)


def _body_parameter(row: Endpoint, provider_: object) -> str | None:
    """The provider method's parameter that takes the body: the one neither the path nor the query names.
    A row and a method that do not fit fail at start-up, naming both."""
    method = getattr(provider_, row.provider, None)
    if method is None:
        raise RuntimeError(f"{row.rule}: the provider {type(provider_).__name__} has no method {row.provider}")
    named, signature = [*endpoints.path_names(row.rule), *endpoints.query_names(row)], inspect.signature(method)
    rest = [name for name in signature.parameters if name not in named]
    if len(rest) != (1 if row.body else 0) or not set(named) <= set(signature.parameters):
        raise RuntimeError(f"{row.rule}: {row.provider}{signature} does not take the path parameters and query "
                           f"fields {named}" + (" and then the body" if row.body else ""))
    return rest[0] if row.body else None


def generic_view(row: Endpoint, body_parameter: str | None) -> Callable:
    """The view of a row: path ids, query and body checked (400s naming them), then the provider's answer."""
    def view(**path):
        arguments = {name: _path_value(name, value) for name, value in path.items()}
        if row.query is not None:
            arguments.update(dict(query(row.query)))
        if row.body is not None:
            raw = json_body() if row.body_required or request.get_data(cache=True) else {}
            arguments[body_parameter] = validated(row.body, raw)
        return respond(getattr(provider(), row.provider)(**arguments), row.codes[0])
    view.__name__, view.__doc__ = row.name, row.summary
    return view


def _path_value(name: str, value):
    """A path id checked: a string is a safe id (400 naming it), an integer one SQLite can hold (else 404)."""
    if isinstance(value, int):
        if value > SQLITE_MAX_INT:  # past SQLite's integers (sqlite3 would raise OverflowError): no such row
            raise ApiError(404, f"unknown {name}: {value}")
        return value
    return check_id(value, name)


# --- views of their own ---

def index():
    """The dashboard page (a shell; all data comes from /api/*)."""
    return render_template("index.html")


def export_logs():
    """A download of the log events of the last `days` as json, csv or ndjson."""
    options = query(Export)
    fmt, days = options.format, options.days
    events = provider().export_logs(days)
    filename = f"training-logs-{time.strftime('%Y%m%d')}-{days}d.{fmt}"
    mimetype = {"json": "application/json", "csv": "text/csv", "ndjson": "application/x-ndjson"}[fmt]
    body = {"json": _json_lines, "csv": _csv_lines, "ndjson": _ndjson_lines}[fmt](events)
    return Response(stream_with_context(body), mimetype=mimetype,
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})


def _json_lines(events):
    yield "["
    for i, event in enumerate(events):
        yield ("," if i else "") + "\n" + json.dumps(event, ensure_ascii=False)
    yield "\n]\n"


def _ndjson_lines(events):
    for event in events:
        yield json.dumps(event, ensure_ascii=False) + "\n"


def _csv_lines(events):
    fields = ("timestamp", "level", "source", "message")
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    for event in events:
        writer.writerow({k: event[k] for k in fields})
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    yield buffer.getvalue()


def api_status():
    """Service status, version, environment, provider, uptime, database and data-source health."""
    db_state = "ok" if database.ping() else "error"
    source = provider().source_status()
    overall = "ok" if db_state == "ok" and source == "ok" else ("error" if source == "error" else "degraded")
    started = current_app.extensions["started_at"]
    return jsonify({"status": overall, "version": VERSION, "environment": current_app.config["ENVIRONMENT"],
                    "provider": provider().name, "uptime_seconds": int(time.monotonic() - started),
                    "database": db_state, "data_source": source})


def endpoints_list():
    """Every route of this server with its methods and description."""
    return jsonify([{"path": rule.rule, "methods": sorted(rule.methods - {"HEAD", "OPTIONS"}),
                     "description": endpoints.summary(current_app, rule, row)}
                    for rule, row in endpoints.listing(current_app)])
