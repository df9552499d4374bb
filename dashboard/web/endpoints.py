"""Every endpoint of the server in one table (redash's handlers/api.py, glances' route_mapping).

A row names the Flask rule, methods, provider method, response model (dashboard/contract/), query and body models
(queries.py, dashboard/contract/), success codes and summary. From the table come the Flask routes (routes.py: one
generic view validates the query and body, calls the provider method with the path ids, the query fields
and the body, and answers its Payload), the cloud proxy (dashboard/cloud/provider.py forwards each provider method to
the row's URL), /api/endpoints, the OpenAPI document (openapi.py) and the query parameters the response
cache keys by. A row with its own `view` ("module:function") is registered as that view, still listed
and documented from its row.

A new endpoint is one row here, one DataProvider method (data_providers.py and dashboard/local/provider.py) and one
contract model: docs/adding-an-endpoint.md.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional
from urllib.parse import quote

from werkzeug.exceptions import HTTPException
from werkzeug.routing import RequestRedirect

from dashboard.contract import (AckAlert, AgentDetail, AgentsHealth, AgentStatusRow, Alert, ApiStatus, AuditEntry,
                                ComparisonRow, EndpointInfo, HealthHistory, LogEvent, MetricHistory, MetricsQuality,
                                NewProject, NotificationDelivery, NotificationTestQueued, Overview, Project,
                                ProjectSummary, QuickStats, StartTraining, SystemHealth, TrainingLogs, TrainingRun,
                                TrainingRunRecord, TrainingSchedule, TrainingSession, TrainingStarted, TrainingStatus,
                                Trends)
from dashboard.web.queries import Days, EventPage, Export, Hours, Limit, Notifications, ProjectPage, RecentLogs

# What a request needs (docs/access.md): `open` nothing; `read` a key only with REQUIRE_AUTH_FOR_READS;
# `operate` (training start and stop) and `admin` (everything else) a key of that scope or above, once any
# key exists. A row's scope defaults from its methods, so a new POST needs an admin key unless it says so.
SCOPES = ("open", "read", "operate", "admin")


@dataclass(frozen=True)
class Endpoint:
    """One row of the table.

    `response` is the contract model (or `list[model]`) of a JSON answer, or the name of a kind of answer
    that is not one (openapi.CONTENT: html, json_object, document, prometheus, sse, download). `provider` is
    the DataProvider method the generic view calls (by default the row's name; none for a row with its own
    view unless it calls one). `codes`: the success statuses, the first the usual one (a provider's
    contract.Answer may carry another of them); `errors`: statuses particular to the endpoint (409...).
    """

    methods: tuple[str, ...]
    rule: str
    name: str
    response: object
    summary: str
    provider: Optional[str] = None
    query: Optional[type] = None
    body: Optional[type] = None
    body_required: bool = True
    codes: tuple[int, ...] = (200,)
    errors: tuple[int, ...] = ()
    view: object = None  # a view of its own: "module:function" or the function
    group: str = "api"
    scope: str = ""  # the key scope it needs (SCOPES); by default read for a GET, admin for anything else

    def __post_init__(self):
        if not self.scope:
            object.__setattr__(self, "scope", "read" if set(self.methods) <= {"GET", "HEAD"} else "admin")
        if self.scope not in SCOPES:
            raise ValueError(f"{self.rule}: scope {self.scope!r} is not one of {SCOPES}")

    @property
    def endpoint(self) -> str:
        """The Flask endpoint name: `<group>.<name>`."""
        return f"{self.group}.{self.name}"


def get(rule: str, name: str, response: object, summary: str, **more) -> Endpoint:
    """A GET row; its provider method is `name` unless it has its own view."""
    more.setdefault("provider", None if more.get("view") else name)
    return Endpoint(("GET",), rule, name, response, summary, **more)


def post(rule: str, name: str, response: object, summary: str, **more) -> Endpoint:
    """A POST row; its provider method is `name` unless said otherwise."""
    more.setdefault("provider", None if more.get("view") else name)
    return Endpoint(("POST",), rule, name, response, summary, **more)


TABLE: tuple[Endpoint, ...] = (
    # --- page ---
    get("/", "index", "html", "The dashboard page (a shell; all data comes from /api/*).",
        view="dashboard.web.routes:index", group="pages", scope="open"),
    # --- dashboard ---
    get("/api/dashboard/overview", "dashboard_overview", Overview,
        "Phase, overall quality, last and next training, improvements and quality trend."),
    get("/api/dashboard/quick-stats", "quick_stats", QuickStats,
        "Header counters: agents online/total, quality, last training, running, alerts, errors in 24 h."),
    # --- agents ---
    get("/api/agents/status", "agents_status", list[AgentStatusRow],
        "Every agent with status, quality, processing time, improvement and recent errors."),
    get("/api/agents/health", "agents_health", AgentsHealth,
        "Agent counts by status, agents below the quality threshold, overall status."),
    get("/api/agents/<agent_id>", "agent_detail", AgentDetail,
        "One agent's status, configuration and recent quality history."),
    # --- training ---
    get("/api/training/status", "training_status", TrainingStatus,
        "Whether a run is going, its phase, agent, progress and time left; last phase durations."),
    get("/api/training/history", "training_history", list[TrainingRun],
        "Runs of the last `days` days (1-365, default 7), newest first.", query=Days),
    get("/api/training/runs/<run_id>", "training_run", TrainingRunRecord,
        "One run by its `run_id` (from the history): phases, agents, errors, output tail, the run before it."),
    get("/api/training/schedule", "training_schedule", TrainingSchedule,
        "The cron schedule, its description, whether enabled, and the next run."),
    post("/api/training/start", "training_start", TrainingStarted,
         'Start a training run (body {"force": bool} optional); 202 with the session, 409 while one runs.',
         provider="start_training", body=StartTraining, body_required=False, codes=(202,), errors=(409,),
         scope="operate"),
    post("/api/training/stop", "training_stop", TrainingSession,
         "Stop the running training (SIGTERM, SIGKILL after the grace); 200 once ended, 202 while stopping.",
         provider="stop_training", codes=(200, 202), errors=(409,), scope="operate"),
    get("/api/training/session/<int:session_id>", "training_session", TrainingSession,
        "One dashboard training session: status, start and end, exit code, error message."),
    # --- metrics ---
    get("/api/metrics/quality", "metrics_quality", MetricsQuality,
        "Daily quality of the system and each agent over `days`, arrays aligned to `timestamps`.", query=Days),
    get("/api/metrics/history/<metric_name>", "metric_history", MetricHistory,
        "The points of one metric of training_metrics.json over `days`.", query=Days),
    get("/api/metrics/comparison", "metrics_comparison", list[ComparisonRow],
        "Agents side by side, ranked by latest quality."),
    get("/api/metrics/trends", "metrics_trends", Trends,
        "System quality over `days` with its 7-day moving average and direction; per-agent trends.", query=Days),
    # --- system ---
    get("/api/system/health", "system_health", SystemHealth,
        "CPU, memory and disk use, uptime and connections of the host."),
    get("/api/system/health/history", "health_history", HealthHistory,
        "Stored host health samples of the last `hours` (1-720, default 24), oldest first.", query=Hours),
    get("/api/system/logs/recent", "recent_logs", list[LogEvent],
        "The newest `limit` log events (1-1000, default 50), newest first; optional `level` filter.",
        query=RecentLogs),
    get("/api/system/errors", "system_errors", list[LogEvent],
        "The newest ERROR and WARNING log events, newest first.", query=Limit),
    get("/api/system/alerts", "system_alerts", list[Alert],
        "Active alerts with severity, source, message, since when, and whether acknowledged (with the note)."),
    post("/api/system/alerts/<alert_id>/ack", "acknowledge_alert", Alert,
         'Acknowledge an active alert (body {"note": str, "minutes": 1-10080} optional): it notifies nothing more '
         "but its clearing (until the minutes pass); 404 for an alert not active.",
         body=AckAlert, body_required=False, errors=(404,)),
    get("/api/system/notifications", "system_notifications", list[NotificationDelivery],
        "The newest `limit` webhook deliveries (1-1000, default 50), newest first: event, target host, status.",
        query=Notifications),
    post("/api/system/notifications/test", "test_notification", NotificationTestQueued,
         "Queue a test notification to every webhook target (ALERT_WEBHOOK_URLS); 202 with the targets.",
         codes=(202,)),
    get("/api/system/audit", "system_audit", list[AuditEntry],
        "Every POST under /api/ on this instance, newest first (`limit`, 1-1000, default 50): when, which key"
        " (its name; anonymous while no key exists), from where, and the status it got.",
        query=Limit, scope="admin"),
    # --- storyboard ---
    get("/api/storyboard/projects", "storyboard_projects", list[ProjectSummary],
        "Storyboard projects, newest first: `limit` (1-1000, default 100) from `offset`.", query=ProjectPage),
    get("/api/storyboard/project/<project:project_id>", "storyboard_project", Project,
        "One project with its scenes."),
    post("/api/storyboard/project/create", "create_storyboard_project", Project,
         "Store a project: {name (1-200 chars), description?, scenes?: [{title, description?, duration_sec > 0}]}.",
         body=NewProject, codes=(201,)),
    # --- logs ---
    get("/api/logs/training", "training_logs", TrainingLogs,
        "Training log events, newest first, `limit` per page from `offset`.", query=EventPage),
    get("/api/logs/export", "export_logs", "download",
        "A download of the log events of the last `days` as json, csv or ndjson.",
        query=Export, view="dashboard.web.routes:export_logs", provider="export_logs"),
    # --- service ---
    get("/api/status", "api_status", ApiStatus,
        "Service status, version, environment, provider, uptime, database and data-source health.",
        view="dashboard.web.routes:api_status", scope="open"),
    get("/api/endpoints", "endpoints", list[EndpointInfo],
        "Every route of this server with its methods and description.", view="dashboard.web.routes:endpoints_list"),
    get("/api/stream", "stream", "sse",
        "Server-Sent Events: `training`, `health`, `alert` and `log`, and a heartbeat comment every 15 s.",
        view="dashboard.web.stream:stream", group="stream", errors=(503,)),
    get("/api/openapi.json", "openapi_json", "document",
        "This API as an OpenAPI 3.1 document, generated from the routes and the response contract.",
        view="dashboard.web.openapi:openapi_json", group="openapi"),
    get("/api/docs", "api_docs", "html",
        "The API reference: a page that renders /api/openapi.json (Swagger UI, served from this server).",
        view="dashboard.web.openapi:api_docs", group="openapi"),
    # --- operations ---
    get("/metrics", "metrics", "prometheus",
        "Prometheus metrics: requests and latency per endpoint, training, agent quality, host health.",
        view="dashboard.web.monitoring:metrics", group="monitoring"),
    get("/healthz", "healthz", "json_object", "Liveness: the process answers.",
        view="dashboard.web.monitoring:healthz", group="monitoring", scope="open"),
    get("/readyz", "readyz", "json_object",
        "Readiness: the database answers and could take a write, the data source is readable; 503 naming",
        view="dashboard.web.monitoring:readyz", group="monitoring", codes=(200, 503), scope="open"),
)

BY_NAME = {row.name: row for row in TABLE}

RULE_ARG = re.compile(r"<(?:(?P<converter>[a-zA-Z_]+)(?:\([^)]*\))?:)?(?P<name>[a-zA-Z_][a-zA-Z0-9_]*)>")


def path_names(rule: str) -> list[str]:
    """The path parameters of a Flask rule, in order."""
    return [match["name"] for match in RULE_ARG.finditer(rule)]


def fill(rule: str, values: dict) -> str:
    """The URL of `rule` with each path parameter replaced by its value, percent-quoted."""
    return RULE_ARG.sub(lambda m: quote(str(values[m["name"]]), safe=""), rule)


def query_names(row: Optional[Endpoint]) -> tuple[str, ...]:
    """The query parameters a row reads: its query model's fields (none without a row or model)."""
    return tuple(row.query.model_fields) if row is not None and row.query is not None else ()


def rows_of(app) -> dict[str, Endpoint]:
    """The rows registered on `app` (routes.register), by Flask endpoint name."""
    return app.extensions.setdefault("endpoints", {})


def get_row_of_path(app, remembered: int = 4096):
    """path -> the row of the route a GET of it reaches (None: no row, or no such route), looked up once
    per path (up to `remembered` paths, then forgotten at once)."""
    rows: dict[str, Optional[Endpoint]] = {}
    missing = object()

    def row_of(path: str) -> Optional[Endpoint]:
        found = rows.get(path, missing)
        if found is missing:
            try:
                endpoint, _args = app.url_map.bind("localhost").match(path, method="GET")
            except (HTTPException, RequestRedirect):
                endpoint = None
            found = rows_of(app).get(endpoint)
            if len(rows) >= remembered:
                rows.clear()
            rows[path] = found
        return found
    return row_of


def summary(app, rule, row: Optional[Endpoint]) -> str:
    """A route's one-line description: its row's summary, else its view's docstring's first line."""
    if row is not None:
        return row.summary
    doc = (app.view_functions[rule.endpoint].__doc__ or "").strip().splitlines()
    return doc[0] if doc else ""


def listing(app) -> list[tuple[object, Optional[Endpoint]]]:
    """(rule, row or None) of every route of `app` but the static files, in path order: what /api/endpoints
    and the OpenAPI document list (a route added outside the table has no row)."""
    rows = rows_of(app)
    return [(rule, rows.get(rule.endpoint)) for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule)
            if rule.endpoint != "static"]
