"""CloudDataProvider: every read and write proxied to a remote instance of this API (CLOUD_API_URL), each
answer held to the response contract.

Its provider methods are not written one by one: `forwarding` gives the class one method per row of the
endpoint table (endpoints.py), which puts its arguments into the row's URL, query string or body and goes
through the one generic path, CloudDataProvider.forward. Only the log download (a stream) and the source
status are methods of their own.
"""
from __future__ import annotations

import abc
import inspect
import json
from typing import Callable, Iterable, Iterator, Optional
from urllib.parse import urlencode

from pydantic import BaseModel, TypeAdapter, ValidationError

from dashboard.cloud import cache as cloud_cache
from dashboard.cloud import client as cloud_client
import database
from dashboard.store import audit, generations
from dashboard.web import endpoints
from dashboard.contract import Answer, LogEvent
from data_providers import DataProvider
from dashboard.web.endpoints import Endpoint
from dashboard.web.errors import ApiError

_SHAPES: dict[object, TypeAdapter] = {}
# Fields of the contract that describe the upstream's machine (a session's wrapper pid, command line and
# output file): the proxy answers them as null.
UPSTREAM_LOCAL = frozenset({"pid", "command", "output_path"})


def check_upstream_shape(shape: object, body) -> None:
    """Check an upstream body against a contract model (or list of them); ApiError 502 naming the first bad fields.
    Without a model (an answer that is not one), the body must be JSON with `warnings` a list of strings."""
    problems: list[str] = []
    if shape is not None and not isinstance(shape, str):
        adapter = _SHAPES.get(shape) or _SHAPES.setdefault(shape, TypeAdapter(shape))
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


def _signature(cls: type, row: Endpoint) -> inspect.Signature:
    """The provider method's signature: the contract's (DataProvider), else the row's own order (path
    parameters, query fields, then `body`)."""
    declared = getattr(cls, row.provider, None)
    if declared is not None:
        return inspect.signature(declared)
    names = ["self", *endpoints.path_names(row.rule), *endpoints.query_names(row), *(["body"] if row.body else [])]
    return inspect.Signature([inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in names])


def forwarder(row: Endpoint, signature: inspect.Signature) -> Callable:
    """The cloud method of `row`: its arguments, bound as the contract names them, forwarded."""
    def forward(self, *args, **kwargs):
        arguments = signature.bind(self, *args, **kwargs).arguments
        arguments.pop("self")
        return self.forward(row, arguments)
    forward.__name__ = forward.__qualname__ = row.provider
    forward.__doc__ = f"{'/'.join(row.methods)} {row.rule} upstream, checked against the row's contract model."
    forward.__signature__ = signature
    forward.row = row
    return forward


def forwarding(rows: Iterable[Endpoint]) -> Callable[[type], type]:
    """Class decorator: a forwarder for each row's provider method the class does not define itself."""
    def decorate(cls: type) -> type:
        for row in rows:
            if row.provider and row.provider not in vars(cls):
                setattr(cls, row.provider, forwarder(row, _signature(cls, row)))
        abc.update_abstractmethods(cls)
        return cls
    return decorate


@forwarding(endpoints.TABLE)
class CloudDataProvider(DataProvider):
    """Reads everything from a remote instance of this API (CLOUD_API_URL, same paths, same JSON).

    The HTTP layer (sessions, retries, timeouts, failures as ApiError) is cloud_client.CloudClient. Every
    answer is checked against its row's contract model (a mismatch is a 502 naming the field); GET answers are
    cached for CLOUD_CACHE_SECONDS per process, and only until a POST through any worker of this instance
    (the cache generation, see response_cache); upstream warnings (body or X-Data-Warnings) are passed on.
    """

    name = "cloud"

    def __init__(self, config: dict):
        self.client = cloud_client.CloudClient.from_config(config)
        # Held only while this instance's cache generation (bumped by every worker's successful POST) stands.
        shared = generations.generations(config["DATABASE_PATH"]) if config.get("DATABASE_PATH") else None
        self.cache = cloud_cache.TTLCache(config.get("CLOUD_CACHE_SECONDS", 2),
                                           generation=shared.stamp if shared else None)

    # --- the one forwarding path ---

    def forward(self, row: Endpoint, arguments: dict) -> Answer:
        """One request upstream for `row`: its path ids into the URL, its query fields (those not None) into
        the query string, the body model (the argument neither names) as JSON. The answer is checked against
        the row's contract model; a GET's is cached, a POST empties the cache. The upstream's status is kept."""
        path = endpoints.fill(row.rule, arguments)
        query = {k: arguments[k] for k in endpoints.query_names(row) if arguments.get(k) is not None}
        if "GET" in row.methods:
            key = path + "?" + urlencode(sorted(query.items()))
            status, data, warnings = self.cache.get_or_load(
                key, lambda: self._unpack(row, self.client.get_json(path, query)))
            return Answer(data, warnings, status)
        named = {*endpoints.path_names(row.rule), *endpoints.query_names(row)}
        body: Optional[BaseModel] = next((v for k, v in arguments.items() if k not in named), None)
        answer = self.client.post_json(path, body.model_dump(mode="json", exclude_unset=True) if body else {})
        self.cache.clear()  # what was just written shows on the next read
        status, data, warnings = self._unpack(row, answer)
        return Answer(data, warnings, status)

    def _unpack(self, row: Endpoint, answer: cloud_client.Answer) -> tuple[int, object, list[str]]:
        body = answer.body
        try:
            check_upstream_shape(row.response, body)
        except ApiError as err:
            raise ApiError(err.status, self.client.redact(err.message)) from None
        if isinstance(body, dict):
            warnings = body.get("warnings", [])
            # The upstream's own processes and files mean nothing here and say too much: never passed on.
            return answer.status, {k: (None if k in UPSTREAM_LOCAL else v) for k, v in body.items()
                                   if k != "warnings"}, warnings
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

    # --- methods of their own ---

    def system_audit(self, limit: int) -> Answer:
        """The writes made through this proxy, from its own database (the upstream audits the proxy's key)."""
        return Answer(audit.entries(database.get_db(), limit), [], 200)

    def export_logs(self, days: int) -> Iterator[dict]:
        """Streams the upstream's ndjson export line by line (never held in memory, never cached).

        The upstream request is made here, before the response starts, so its failure is a JSON error; a
        failure half-way raises inside the stream and the download ends incomplete rather than look whole.
        """
        lines = self.client.stream_lines("/api/logs/export", {"format": "ndjson", "days": days})
        return self._log_events(lines)

    def _log_events(self, lines: Iterator[bytes]) -> Iterator[dict]:
        shape = _SHAPES.get(LogEvent) or _SHAPES.setdefault(LogEvent, TypeAdapter(LogEvent))
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

    # --- status ---

    def source_status(self) -> str:
        """ok when the upstream's /api/status answers ok; degraded when it answers degraded or error;
        error when it does not answer (or answers something else)."""
        try:
            payload = self.forward(endpoints.BY_NAME["api_status"], {})
        except ApiError:
            return "error"
        return "ok" if payload.data.get("status") == "ok" else "degraded"
