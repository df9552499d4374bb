"""Every route of the API in one table: views validate input, call one provider function, return JSON.
Each view declares the query parameters it reads (@query_params): the response cache keys by these."""
from __future__ import annotations

import csv
import io
import json
import time

from flask import Blueprint, Response, current_app, jsonify, render_template, request, stream_with_context
from pydantic import ValidationError

import database
from config import VERSION
from contract import NewProject, Payload, StartTraining
from errors import ApiError
from validation import (MAX_OFFSET, PROJECTS_PAGE, check_id, choice_arg, days_arg, int_arg, limit_arg,
                        query_params)

bp = Blueprint("api", __name__, url_prefix="/api")
pages = Blueprint("pages", __name__)

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
EXPORT_FORMATS = ("json", "csv", "ndjson")


def provider():
    """The DataProvider chosen at start-up from ENVIRONMENT."""
    return current_app.extensions["provider"]


def respond(payload: Payload, status: int = 200):
    """JSON for a provider answer: objects carry `warnings`; lists carry them in X-Data-Warnings."""
    data, warnings = payload
    status = getattr(payload, "status", None) or status  # the cloud provider passes the upstream's status on
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


# --- page ---

@pages.get("/")
def index():
    """The dashboard page (a shell; all data comes from /api/*)."""
    return render_template("index.html")


# --- dashboard ---

@bp.get("/dashboard/overview")
def dashboard_overview():
    """Phase, overall quality, last and next training, improvements and quality trend."""
    return respond(provider().dashboard_overview())


@bp.get("/dashboard/quick-stats")
def quick_stats():
    """Header counters: agents online/total, quality, last training, running, alerts, errors in 24 h."""
    return respond(provider().quick_stats())


# --- agents ---

@bp.get("/agents/status")
def agents_status():
    """Every agent with status, quality, processing time, improvement and recent errors."""
    return respond(provider().agents_status())


@bp.get("/agents/health")
def agents_health():
    """Agent counts by status, agents below the quality threshold, overall status."""
    return respond(provider().agents_health())


@bp.get("/agents/<agent_id>")
def agent_detail(agent_id):
    """One agent's status, configuration and recent quality history."""
    return respond(provider().agent_detail(check_id(agent_id, "agent_id")))


# --- training ---

@bp.get("/training/status")
def training_status():
    """Whether a run is going, its phase, agent, progress and time left; last phase durations."""
    return respond(provider().training_status())


@bp.get("/training/history")
@query_params("days")
def training_history():
    """Runs of the last `days` days (1-365, default 7), newest first."""
    return respond(provider().training_history(days_arg()))


@bp.get("/training/schedule")
def training_schedule():
    """The cron schedule, its description, whether enabled, and the next run."""
    return respond(provider().training_schedule())


@bp.post("/training/start")
def training_start():
    """Start a training run (body {"force": bool} optional); 202 with the session, 409 while one runs."""
    body = json_body() if request.get_data(cache=True) else {}
    return respond(provider().start_training(validated(StartTraining, body).force), 202)


@bp.post("/training/stop")
def training_stop():
    """Stop the running training (SIGTERM, SIGKILL after the grace); 200 once ended, 202 while stopping."""
    payload = provider().stop_training()
    stopping = isinstance(payload.data, dict) and payload.data.get("status") == "stopping"
    return respond(payload, 202 if stopping else 200)


@bp.get("/training/session/<int:session_id>")
def training_session(session_id):
    """One dashboard training session: status, start and end, exit code, error message."""
    if session_id > 2**63 - 1:  # past SQLite's integers (sqlite3 would raise OverflowError): no such session
        raise ApiError(404, f"unknown session_id: {session_id}")
    return respond(provider().training_session(session_id))


# --- metrics ---

@bp.get("/metrics/quality")
@query_params("days")
def metrics_quality():
    """Daily quality of the system and each agent over `days`, arrays aligned to `timestamps`."""
    return respond(provider().metrics_quality(days_arg()))


@bp.get("/metrics/history/<metric_name>")
@query_params("days")
def metric_history(metric_name):
    """The points of one metric of training_metrics.json over `days`."""
    return respond(provider().metric_history(check_id(metric_name, "metric_name"), days_arg()))


@bp.get("/metrics/comparison")
def metrics_comparison():
    """Agents side by side, ranked by latest quality."""
    return respond(provider().metrics_comparison())


@bp.get("/metrics/trends")
@query_params("days")
def metrics_trends():
    """System quality over `days` with its 7-day moving average and direction; per-agent trends."""
    return respond(provider().metrics_trends(days_arg()))


# --- system ---

@bp.get("/system/health")
def system_health():
    """CPU, memory and disk use, uptime and connections of the host."""
    return respond(provider().system_health())


@bp.get("/system/health/history")
@query_params("hours")
def health_history():
    """Stored host health samples of the last `hours` (1-720, default 24), oldest first."""
    return respond(provider().health_history(int_arg("hours", 24, 1, 720)))


@bp.get("/system/logs/recent")
@query_params("limit", "level")
def recent_logs():
    """The newest `limit` log events (1-1000, default 50), newest first; optional `level` filter."""
    return respond(provider().recent_logs(limit_arg(), choice_arg("level", LOG_LEVELS, None)))


@bp.get("/system/errors")
@query_params("limit")
def system_errors():
    """The newest ERROR and WARNING log events, newest first."""
    return respond(provider().system_errors(limit_arg()))


@bp.get("/system/alerts")
def system_alerts():
    """Active alerts with severity, source, message and since when."""
    return respond(provider().system_alerts())


# --- storyboard ---

@bp.get("/storyboard/projects")
@query_params("limit", "offset")
def storyboard_projects():
    """Storyboard projects, newest first: `limit` (1-1000, default 100) from `offset`."""
    return respond(provider().storyboard_projects(limit_arg(PROJECTS_PAGE), int_arg("offset", 0, 0, MAX_OFFSET)))


@bp.get("/storyboard/project/<project:project_id>")
def storyboard_project(project_id):
    """One project with its scenes."""
    return respond(provider().storyboard_project(check_id(project_id, "project_id")))


@bp.post("/storyboard/project/create")
def create_storyboard_project():
    """Store a project: {name (1-200 chars), description?, scenes?: [{title, description?, duration_sec > 0}]}."""
    project = validated(NewProject, json_body())
    return respond(provider().create_storyboard_project(project), 201)


# --- logs ---

@bp.get("/logs/training")
@query_params("limit", "offset")
def training_logs():
    """Training log events, newest first, `limit` per page from `offset`."""
    return respond(provider().training_logs(limit_arg(), int_arg("offset", 0, 0, MAX_OFFSET)))


@bp.get("/logs/export")
@query_params("format", "days")
def export_logs():
    """A download of the log events of the last `days` as json, csv or ndjson."""
    fmt, days = choice_arg("format", EXPORT_FORMATS, "json"), days_arg()
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


# --- utility ---

@bp.get("/status")
def api_status():
    """Service status, version, environment, provider, uptime, database and data-source health."""
    db_state = "ok" if database.ping() else "error"
    source = provider().source_status()
    overall = "ok" if db_state == "ok" and source == "ok" else ("error" if source == "error" else "degraded")
    started = current_app.extensions["started_at"]
    return jsonify({"status": overall, "version": VERSION, "environment": current_app.config["ENVIRONMENT"],
                    "provider": provider().name, "uptime_seconds": int(time.monotonic() - started),
                    "database": db_state, "data_source": source})


@bp.get("/endpoints")
def endpoints():
    """Every route of this server with its methods and description."""
    rows = []
    for rule in sorted(current_app.url_map.iter_rules(), key=lambda r: r.rule):
        if rule.endpoint == "static":
            continue
        view = current_app.view_functions[rule.endpoint]
        doc = (view.__doc__ or "").strip().splitlines()
        rows.append({"path": rule.rule, "methods": sorted(rule.methods - {"HEAD", "OPTIONS"}),
                     "description": doc[0] if doc else ""})
    return jsonify(rows)
