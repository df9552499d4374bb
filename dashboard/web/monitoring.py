"""Operations endpoints: Prometheus `/metrics` (summed across gunicorn workers), `/healthz`, `/readyz`.

Under gunicorn, gunicorn.conf.py sets PROMETHEUS_MULTIPROC_DIR before the workers import this module,
so counters and histograms are written per process and summed at scrape time (prometheus_client's
multiprocess mode). Training, agent and host figures are read fresh at each scrape instead.
"""
from __future__ import annotations

import logging
import os
import sqlite3
import time

from flask import Flask, Response, current_app, g, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

import database
from dashboard.store import events
from dashboard.timestamps import parse_iso
from dashboard.web.errors import ApiError

log = logging.getLogger(__name__)
request_log = logging.getLogger("dashboard")

REQUESTS = Counter("dashboard_http_requests_total", "HTTP requests answered", ["endpoint", "method", "status"])
LATENCY = Histogram("dashboard_http_request_duration_seconds", "Time to answer an HTTP request",
                    ["endpoint", "method"], buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))
ENDPOINT_KEY = "dashboard.endpoint"  # WSGI environ key: the route rule that answered
REFRESH_KEY = "dashboard.refresh"  # WSGI environ key: the response cache's own recomputation, not a request


def record_request(method: str, path: str, endpoint: str, status: int, elapsed: float) -> None:
    """One answered request: its log line (method, path, status, duration) and its Prometheus figures."""
    request_log.info("%s %s %s %.1fms", method, path, status, elapsed * 1000)
    figures = _figures.get((endpoint, method, status))
    if figures is None:  # the labelled children, looked up once (labels() takes a lock and builds a key)
        figures = _figures[endpoint, method, status] = (REQUESTS.labels(endpoint, method, str(status)),
                                                        LATENCY.labels(endpoint, method))
    figures[0].inc()
    figures[1].observe(elapsed)


_figures: dict[tuple, tuple] = {}


def observe_requests(app: Flask) -> None:
    """Per request: record_request(), and 5xx answers under /api/ as events."""

    @app.before_request
    def start_clock():
        g.request_started = time.perf_counter()

    @app.after_request
    def record(response):
        now = time.perf_counter()
        elapsed = now - g.get("request_started", now)  # 0 when a hook refused the request before the clock
        endpoint = request.url_rule.rule if request.url_rule is not None else "unmatched"
        request.environ[ENDPOINT_KEY] = endpoint  # the label of this path's answers replayed from the cache
        if request.environ.get(REFRESH_KEY):
            return response
        record_request(request.method, request.path, endpoint, response.status_code, elapsed)
        if response.status_code >= 500 and request.path.startswith("/api/"):
            body = response.get_json(silent=True) if response.is_json else None
            message = body.get("error", "") if isinstance(body, dict) else ""
            events.record_api_error(app.config["DATABASE_PATH"], request.method, request.path,
                                    response.status_code, message)
        return response


class DashboardCollector:
    """Training, agent quality and host health as gauges, read through the provider at scrape time."""

    def __init__(self, provider):
        self.provider = provider

    def collect(self):
        try:
            status = self.provider.training_status().data
            history = self.provider.training_history(30).data
            agents = self.provider.agents_status().data
            health = self.provider.system_health().data
        except (ApiError, sqlite3.Error, database.DatabaseUnavailable) as err:
            log.warning("metrics: could not read the dashboard's figures: %s", getattr(err, "message", err))
            return
        running = GaugeMetricFamily("dashboard_training_running", "1 while a training run is going")
        running.add_metric([], 1.0 if status.get("is_running") else 0.0)
        yield running
        finished = [r for r in history if r.get("status") != "running"]
        last = GaugeMetricFamily("dashboard_training_last_result", "1 for the status of the newest finished run",
                                 labels=["status"])
        if finished:
            last.add_metric([finished[0]["status"]], 1.0)
        yield last
        ended = next((parse_iso(r["finished_at"]) for r in finished if r.get("finished_at")), None)
        if ended is not None:  # for an "overdue" rule: time() - this > the schedule's interval
            yield GaugeMetricFamily("dashboard_training_last_finished_timestamp_seconds",
                                    "Unix time the newest finished run ended", value=ended.timestamp())
        quality = GaugeMetricFamily("dashboard_agent_quality_score",
                                    "Latest quality score (0-10) of each listed agent (the first MAX_AGENTS)",
                                    labels=["agent"])
        for agent in agents:
            if agent.get("quality_score") is not None:
                quality.add_metric([agent["id"]], float(agent["quality_score"]))
        yield quality
        for key, help_text in (("cpu_percent", "Host CPU use"), ("memory_percent", "Host memory use"),
                               ("disk_percent", "Host disk use")):
            if health.get(key) is not None:
                yield GaugeMetricFamily(f"dashboard_host_{key}", f"{help_text} in percent", value=float(health[key]))


def metrics():
    """Prometheus metrics: requests and latency per endpoint, training, agent quality, host health."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        counted = CollectorRegistry()
        MultiProcessCollector(counted)
    else:
        counted = REGISTRY
    live = CollectorRegistry()
    live.register(DashboardCollector(current_app.extensions["provider"]))
    # The text format allows families from two registries one after the other.
    return Response(generate_latest(counted) + generate_latest(live), content_type=CONTENT_TYPE_LATEST)


def healthz():
    """Liveness: the process answers."""
    return jsonify({"status": "ok"})


def readyz():
    """Readiness: the database answers and could take a write, the data source is readable; 503 naming
    what is not. Checked without writing (a probe never changes what it watches)."""
    checks = {"database": "ok", "data_source": "ok"}
    try:
        database.get_db().execute("SELECT 1 FROM storyboard_projects LIMIT 1").fetchall()
        problem = database.write_problem(current_app.config["DATABASE_PATH"])
        if problem:
            checks["database"] = f"not writable: {problem}"
    except (sqlite3.Error, database.DatabaseUnavailable) as err:
        checks["database"] = f"not writable: {err}"
    try:
        source = current_app.extensions["provider"].source_status()
    except ApiError as err:
        source = f"error: {err.message}"
    if source not in ("ok", "degraded"):
        checks["data_source"] = "unreadable (see /api/status and the warnings of /api/dashboard/overview)"
    ready = all(v == "ok" for v in checks.values())
    response = jsonify({"status": "ready" if ready else "not ready", "checks": checks})
    response.status_code = 200 if ready else 503
    return response
