"""CloudDataProvider: every read and write proxied to a remote instance of this API (CLOUD_API_URL), each
answer held to the response contract."""
from __future__ import annotations

import json
from typing import Iterator, Optional
from urllib.parse import quote, urlencode

from pydantic import TypeAdapter, ValidationError

import cloud_cache
import cloud_client
import database
from contract import RESPONSES, LogEvent, NewProject, Payload
from data_providers import DataProvider
from errors import ApiError


class UpstreamPayload(Payload):
    """A Payload read from the cloud API, with the upstream's HTTP status (routes.respond passes it on)."""

    def __new__(cls, data, warnings, status: int = 200):
        payload = super().__new__(cls, data, warnings)
        payload.status = status
        return payload


_SHAPES: dict[str, TypeAdapter] = {}


def check_upstream_shape(name: str, body) -> None:
    """Check an upstream body against contract.RESPONSES[name]; ApiError 502 naming the first bad fields."""
    problems: list[str] = []
    if name == "metrics_quality":
        problems = _metrics_quality_problems(body)
    elif name in RESPONSES:
        adapter = _SHAPES.get(name) or _SHAPES.setdefault(name, TypeAdapter(RESPONSES[name]))
        try:
            adapter.validate_python(body)
        except ValidationError as err:
            problems = [f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in err.errors()]
    elif not isinstance(body, (dict, list)):
        problems = ["body: not a JSON object or list"]
    elif isinstance(body, dict) and not _strings(body.get("warnings", [])):
        problems = ["warnings: not a list of strings"]
    if problems:
        raise ApiError(502, f"upstream response invalid: {'; '.join(problems[:3])}")


def _strings(value) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _metrics_quality_problems(body) -> list[str]:
    """/api/metrics/quality has agent ids as keys: {timestamps, system, <agent_id>..., warnings}, aligned."""
    if not isinstance(body, dict):
        return ["body: Input should be a valid dictionary"]
    problems = [f"{key}: Field required" for key in ("timestamps", "system", "warnings") if key not in body]
    if not _strings(body.get("timestamps", [])):
        problems.append("timestamps: Input should be a list of strings")
    if not _strings(body.get("warnings", [])):
        problems.append("warnings: Input should be a list of strings")
    length = len(body["timestamps"]) if isinstance(body.get("timestamps"), list) else None
    for key, values in body.items():
        if key in ("timestamps", "warnings"):
            continue
        if not isinstance(values, list) or not all(
                v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in values):
            problems.append(f"{key}: Input should be a list of numbers or null")
        elif length is not None and len(values) != length:
            problems.append(f"{key}: {len(values)} values for {length} timestamps")
    return problems


class CloudDataProvider(DataProvider):
    """Reads everything from a remote instance of this API (CLOUD_API_URL, same paths, same JSON).

    The HTTP layer (sessions, retries, timeouts, failures as ApiError) is cloud_client.CloudClient. Every
    answer is checked against contract.RESPONSES (a mismatch is a 502 naming the field); GET answers are
    cached for CLOUD_CACHE_SECONDS per process, and only until a POST through any worker of this instance
    (the cache generation, see response_cache); upstream warnings (body or X-Data-Warnings) are passed on.
    """

    name = "cloud"

    def __init__(self, config: dict):
        self.client = cloud_client.CloudClient.from_config(config)
        # Held only while this instance's cache generation (bumped by every worker's successful POST) stands.
        generations = database.generations(config["DATABASE_PATH"]) if config.get("DATABASE_PATH") else None
        self.cache = cloud_cache.TTLCache(config.get("CLOUD_CACHE_SECONDS", 2),
                                           generation=generations.stamp if generations else None)

    # --- plumbing ---

    def _read(self, name: str, path: str, **params) -> UpstreamPayload:
        query = {k: v for k, v in params.items() if v is not None}
        key = path + "?" + urlencode(sorted(query.items()))
        status, data, warnings = self.cache.get_or_load(key, lambda: self._fetch(name, path, query))
        return UpstreamPayload(data, warnings, status)

    def _fetch(self, name: str, path: str, query: dict) -> tuple[int, object, list[str]]:
        return self._unpack(name, self.client.get_json(path, query))

    def _write(self, name: str, path: str, body: dict) -> UpstreamPayload:
        answer = self.client.post_json(path, body)
        self.cache.clear()  # what was just written shows on the next read
        status, data, warnings = self._unpack(name, answer)
        return UpstreamPayload(data, warnings, status)

    def _unpack(self, name: str, answer: cloud_client.Answer) -> tuple[int, object, list[str]]:
        body = answer.body
        try:
            check_upstream_shape(name, body)
        except ApiError as err:
            raise ApiError(err.status, self.client.redact(err.message)) from None
        if isinstance(body, dict):
            warnings = body.get("warnings", [])
            return answer.status, {k: v for k, v in body.items() if k != "warnings"}, warnings
        return answer.status, body, self._header_warnings(answer.headers.get("X-Data-Warnings"))

    @staticmethod
    def _header_warnings(raw: Optional[str]) -> list[str]:
        if not raw:
            return []
        try:
            warnings = json.loads(raw)
        except ValueError:
            warnings = None
        return warnings if _strings(warnings) else ["upstream X-Data-Warnings header is not a JSON list of strings"]

    # --- dashboard, agents, training, metrics ---

    def dashboard_overview(self) -> Payload:
        return self._read("dashboard_overview", "/api/dashboard/overview")

    def quick_stats(self) -> Payload:
        return self._read("quick_stats", "/api/dashboard/quick-stats")

    def agents_status(self) -> Payload:
        return self._read("agents_status", "/api/agents/status")

    def agent_detail(self, agent_id: str) -> Payload:
        return self._read("agent_detail", f"/api/agents/{quote(agent_id, safe='')}")

    def agents_health(self) -> Payload:
        return self._read("agents_health", "/api/agents/health")

    def training_status(self) -> Payload:
        return self._read("training_status", "/api/training/status")

    def training_history(self, days: int) -> Payload:
        return self._read("training_history", "/api/training/history", days=days)

    def training_schedule(self) -> Payload:
        return self._read("training_schedule", "/api/training/schedule")

    def start_training(self, force: bool) -> Payload:
        return self._write("training_start", "/api/training/start", {"force": force})

    def stop_training(self) -> Payload:
        return self._write("training_stop", "/api/training/stop", {})

    def training_session(self, session_id: int) -> Payload:
        return self._read("training_session", f"/api/training/session/{int(session_id)}")

    def metrics_quality(self, days: int) -> Payload:
        return self._read("metrics_quality", "/api/metrics/quality", days=days)

    def metric_history(self, metric_name: str, days: int) -> Payload:
        return self._read("metric_history", f"/api/metrics/history/{quote(metric_name, safe='')}", days=days)

    def metrics_comparison(self) -> Payload:
        return self._read("metrics_comparison", "/api/metrics/comparison")

    def metrics_trends(self, days: int) -> Payload:
        return self._read("metrics_trends", "/api/metrics/trends", days=days)

    # --- system ---

    def system_health(self) -> Payload:
        return self._read("system_health", "/api/system/health")

    def health_history(self, hours: int) -> Payload:
        return self._read("health_history", "/api/system/health/history", hours=hours)

    def recent_logs(self, limit: int, level: Optional[str]) -> Payload:
        return self._read("recent_logs", "/api/system/logs/recent", limit=limit, level=level)

    def system_errors(self, limit: int) -> Payload:
        return self._read("system_errors", "/api/system/errors", limit=limit)

    def system_alerts(self) -> Payload:
        return self._read("system_alerts", "/api/system/alerts")

    # --- logs ---

    def training_logs(self, limit: int, offset: int) -> Payload:
        return self._read("training_logs", "/api/logs/training", limit=limit, offset=offset)

    def export_logs(self, days: int) -> Iterator[dict]:
        """Streams the upstream's ndjson export line by line (never held in memory, never cached).

        The upstream request is made here, before the response starts, so its failure is a JSON error; a
        failure half-way raises inside the stream and the download ends incomplete rather than look whole.
        """
        lines = self.client.stream_lines("/api/logs/export", {"format": "ndjson", "days": days})
        return self._log_events(lines)

    def _log_events(self, lines: Iterator[bytes]) -> Iterator[dict]:
        shape = _SHAPES.get("log_event") or _SHAPES.setdefault("log_event", TypeAdapter(LogEvent))
        try:
            for number, line in enumerate(lines, 1):
                try:
                    event = json.loads(line)
                    shape.validate_python(event)
                except (ValueError, ValidationError):
                    raise ApiError(502, f"upstream log export invalid at line {number}") from None
                yield event
        finally:
            lines.close()

    # --- storyboard ---

    def storyboard_projects(self, limit: int, offset: int) -> Payload:
        return self._read("storyboard_projects", "/api/storyboard/projects", limit=limit, offset=offset)

    def storyboard_project(self, project_id: str) -> Payload:
        return self._read("storyboard_project", f"/api/storyboard/project/{quote(project_id, safe='')}")

    def create_storyboard_project(self, project: NewProject) -> Payload:
        body = project.model_dump(mode="json", exclude_unset=True)
        return self._write("storyboard_project", "/api/storyboard/project/create", body)

    # --- status ---

    def source_status(self) -> str:
        """ok when the upstream's /api/status answers ok; degraded when it answers degraded or error;
        error when it does not answer (or answers something else)."""
        try:
            payload = self._read("api_status", "/api/status")
        except ApiError:
            return "error"
        return "ok" if payload.data.get("status") == "ok" else "degraded"
