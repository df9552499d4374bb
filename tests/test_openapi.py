"""GET /api/openapi.json and /api/docs: the document is generated from the routes and dashboard/contract/, agrees
with /api/endpoints and with what the app really answers (schemathesis against the WSGI app, and every GET
endpoint's real JSON validated against the document's schema for it)."""
from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

import jsonschema_rs
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    allow_header_conformance,
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from dashboard.web import openapi
from conftest import EXAMPLE_AGENTS, create_app

FLASK_ARG = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")


@pytest.fixture
def doc(client):
    response = client.get("/api/openapi.json")
    assert response.status_code == 200
    assert response.content_type == "application/json"
    return response.get_json()


def operation(doc, path, method="get"):
    return doc["paths"][path][method]


def validator(doc, schema):
    """A JSON Schema 2020-12 validator for `schema`, whose $refs point into the document's components."""
    return jsonschema_rs.Draft202012Validator({**schema, "components": doc["components"]})


# --- the document ---

def test_document_is_openapi_3_1_with_the_contract_models(doc):
    assert doc["openapi"].startswith("3.1.")
    schemas = doc["components"]["schemas"]
    # the contract's shapes, as pydantic writes them (no second copy): every key required, none extra
    assert schemas["AgentStatusRow"]["additionalProperties"] is False
    assert set(schemas["AgentStatusRow"]["required"]) == set(schemas["AgentStatusRow"]["properties"])
    assert schemas["Error"]["required"] == ["error", "status"] and schemas["Error"]["additionalProperties"] is True


def test_the_schemas_are_the_contracts(doc):
    """Each operation's success schema is pydantic's JSON Schema of contract.RESPONSES[view], nothing else."""
    import typing

    from pydantic import TypeAdapter

    from dashboard import contract
    components = doc["components"]["schemas"]
    checked = set()
    for path, item in doc["paths"].items():
        for method, op in item.items():
            name = {"create_storyboard_project": "storyboard_project"}.get(op["operationId"], op["operationId"])
            if name not in contract.RESPONSES:
                continue
            shape = contract.RESPONSES[name]
            generated = TypeAdapter(shape).json_schema(ref_template=openapi.REF)
            for model, schema in generated.pop("$defs", {}).items():
                assert components[model] == schema, model
            success = [r for s, r in op["responses"].items() if s.startswith("2")]
            for response in success:
                documented = response["content"]["application/json"]["schema"]
                if typing.get_origin(shape) is list:
                    assert documented == generated, path
                else:
                    assert documented == {"$ref": f"#/components/schemas/{shape.__name__}"}, path
                    assert components[shape.__name__] == generated, path
            checked.add(name)
    assert checked == set(contract.RESPONSES)


def test_operations_summaries_parameters_bodies_and_responses(doc):
    overview = operation(doc, "/api/dashboard/overview")
    assert overview["summary"].startswith("Phase, overall quality")
    assert overview["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Overview"}
    agents = operation(doc, "/api/agents/status")["responses"]["200"]
    assert agents["content"]["application/json"]["schema"] == {
        "type": "array", "items": {"$ref": "#/components/schemas/AgentStatusRow"}}
    assert "X-Data-Warnings" in agents["headers"]

    detail = operation(doc, "/api/agents/{agent_id}")
    (param,) = detail["parameters"]
    assert param["in"] == "path" and param["required"] and param["schema"]["pattern"] == "^[A-Za-z0-9_.-]{1,64}$"
    assert {"400", "404"} <= set(detail["responses"])
    session = operation(doc, "/api/training/session/{session_id}")
    assert session["parameters"][0]["schema"]["type"] == "integer"

    history = {p["name"]: p for p in operation(doc, "/api/training/history")["parameters"]}
    assert history["days"]["schema"] == {"type": "integer", "minimum": 1, "maximum": 365, "default": 7}
    logs = {p["name"]: p["schema"] for p in operation(doc, "/api/system/logs/recent")["parameters"]}
    assert logs["limit"] == {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50}
    assert logs["level"]["enum"] == ["debug", "info", "warning", "error", "critical", ""]  # empty: no filter
    hours = operation(doc, "/api/system/health/history")["parameters"][0]["schema"]
    assert (hours["minimum"], hours["maximum"], hours["default"]) == (1, 720, 24)

    create = operation(doc, "/api/storyboard/project/create", "post")
    assert create["requestBody"]["required"] is True
    assert create["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/NewProject"}
    assert create["responses"]["201"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Project"}
    assert {"400", "413", "415", "429"} <= set(create["responses"])
    start = operation(doc, "/api/training/start", "post")
    assert start["requestBody"]["required"] is False
    assert {"202", "409"} <= set(start["responses"]) and "200" not in start["responses"]
    assert {"200", "202", "409"} <= set(operation(doc, "/api/training/stop", "post")["responses"])

    export = operation(doc, "/api/logs/export")["responses"]["200"]["content"]
    assert set(export) == {"application/json", "text/csv", "application/x-ndjson"}
    (stream,) = operation(doc, "/api/stream")["responses"]["200"]["content"].items()
    assert stream[0] == "text/event-stream" and stream[1]["schema"]["title"] == "ServerSentEvent"
    quality = doc["components"]["schemas"]["MetricsQuality"]
    assert quality["properties"]["timestamps"]["type"] == "array"
    assert quality["additionalProperties"] == {"items": {"anyOf": [{"type": "number"}, {"type": "null"}]}, "type": "array"}

    for path in ("/metrics", "/healthz", "/readyz"):
        assert path in doc["paths"]


def test_error_responses_use_the_error_schema(doc):
    for path, item in doc["paths"].items():
        for method, op in item.items():
            for status, response in op["responses"].items():
                if int(status) >= 400 and path.startswith("/api/"):
                    assert response["content"] == {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}, (method, path, status)


def test_routes_added_later_appear(make_app, orchestrator):
    from flask import Blueprint

    app = make_app(orchestrator(days=0))
    extra = Blueprint("extra", __name__)

    @extra.get("/api/extra/<thing_id>")
    def extra_thing(thing_id):
        """A route another module adds."""
        return {}

    app.register_blueprint(extra)
    op = app.test_client().get("/api/openapi.json").get_json()["paths"]["/api/extra/{thing_id}"]["get"]
    assert op["summary"] == "A route another module adds." and op["parameters"][0]["name"] == "thing_id"


def test_openapi_path_conversion():
    assert openapi.openapi_path("/api/training/session/<int:session_id>") == "/api/training/session/{session_id}"
    assert openapi.openapi_path("/a/<name>/<int(min=1):n>/<path:rest>") == "/a/{name}/{n}/{rest}"


# --- the key: declared exactly where the server asks for it ---

KEY = "openapi-test-key-0123456789"
KEY_SETTINGS = {"no key": {}, "key for writes": {"API_KEY": KEY},
                "key for everything": {"API_KEY": KEY, "REQUIRE_AUTH_FOR_READS": True}}


def concrete(path: str, item: dict) -> str:
    """A URL of a document path: integer path parameters 1, string ones `p1`."""
    types = {p["name"]: p["schema"]["type"] for op in item.values() for p in op.get("parameters", [])
             if p["in"] == "path"}
    return re.sub(r"{([^}]+)}", lambda m: "1" if types.get(m[1]) == "integer" else "p1", path)


# plan T37
@pytest.mark.parametrize("key_settings", KEY_SETTINGS.values(), ids=list(KEY_SETTINGS))
def test_the_key_is_declared_exactly_where_a_request_without_it_is_refused(make_app, orchestrator, key_settings):
    app = make_app(orchestrator(days=0), **key_settings)
    client = app.test_client()
    doc = client.get("/api/openapi.json", headers={"Authorization": f"Bearer {KEY}"}).get_json()
    assert ("securitySchemes" in doc["components"]) == ("API_KEY" in key_settings)
    declared = set()
    for path, item in doc["paths"].items():
        for method, op in item.items():
            needs_key = "security" in op
            assert needs_key == ("401" in op["responses"]), (method, path)
            if needs_key:
                assert op["security"] == [{"bearerAuth": []}], (method, path)
                declared.add((method, path))
            elif (method, path) in {("get", "/api/stream"), ("post", "/api/training/start")}:
                continue  # would open a never-ending stream, start a real run
            status = client.open(concrete(path, item), method=method.upper()).status_code
            assert (status == 401) == needs_key, (method, path, status)
    posts = {(m, p) for p, item in doc["paths"].items() for m in item if m == "post"}
    reads = {(m, p) for p, item in doc["paths"].items() for m in item if m == "get" and p.startswith("/api/")}
    # the audit is an admin read; /metrics is a read, outside /api/ (docs/access.md)
    expected = {"no key": set(), "key for writes": posts | {("get", "/api/system/audit")},
                "key for everything": posts | reads - {("get", "/api/status")} | {("get", "/metrics")}}
    assert declared == expected[next(k for k, v in KEY_SETTINGS.items() if v == key_settings)]


# --- OPTIONS: every path allows the methods it has, and only those ---

# plan T37
def test_every_paths_allow_header_lists_exactly_its_documented_methods(app, client, doc):
    """OPTIONS answers the methods the document lists for the path (and HEAD with GET, and OPTIONS); a
    method the path does not have is a 405 with the same Allow, never another route's answer."""
    for path, item in doc["paths"].items():
        url = concrete(path, item)
        documented = {m.upper() for m in item} | {"OPTIONS"} | ({"HEAD"} if "get" in item else set())
        allow = client.options(url).headers["Allow"]
        assert set(allow.split(", ")) == documented, (url, allow)
        for method in {"GET", "POST"} - documented:
            response = client.open(url, method=method)
            assert response.status_code == 405, (method, url, response.status_code)
            assert set(response.headers["Allow"].split(", ")) == documented, (method, url)
    created = client.get("/api/storyboard/project/create")  # the route beside a project's: not a project
    assert created.status_code == 405 and created.get_json()["error"].startswith("method GET not allowed")
    # the route table says the same: the URL of each rule allows that rule's methods
    for rule in app.url_map.iter_rules():
        url = re.sub(r"<int:[^>]+>", "1", re.sub(r"<(?!int:)[^>]+>", "p1", rule.rule))
        assert set(client.options(url).headers["Allow"].split(", ")) == rule.methods, rule.rule


# --- the document agrees with /api/endpoints ---

def test_endpoints_and_openapi_list_the_same_operations(client, doc):
    listed = {(FLASK_ARG.sub(r"{\1}", row["path"]), method.lower())
              for row in client.get("/api/endpoints").get_json() for method in row["methods"]}
    documented = {(path, method) for path, item in doc["paths"].items() for method in item}
    assert listed == documented
    descriptions = {FLASK_ARG.sub(r"{\1}", row["path"]): row["description"] for row in client.get("/api/endpoints").get_json()}
    for path, method in documented:
        assert doc["paths"][path][method]["summary"] == descriptions[path]
    assert ("/api/openapi.json", "get") in documented and ("/api/docs", "get") in documented


# --- the tables of openapi.py hold for the app ---

QUERY_PROBES = {"days": ("0", "366"), "limit": ("0", "1001"), "hours": ("0", "721"), "offset": ("-1", "100001"),
                "format": ("xml",), "level": ("loud",)}


def _get_operations(doc):
    return [(path, op) for path, item in doc["paths"].items() for method, op in item.items()
            if method == "get" and "{" not in path and path not in ("/api/stream",)]


def test_every_documented_query_parameter_is_checked_and_no_other(client, doc):
    """For every GET and every query parameter the app knows: a bad value is a 400 exactly where documented."""
    for path, op in _get_operations(doc):
        documented = {p["name"]: p["schema"] for p in op.get("parameters", []) if p["in"] == "query"}
        for name, bad_values in QUERY_PROBES.items():
            for bad in bad_values:
                status = client.get(path, query_string={name: bad}).status_code
                assert (status == 400) == (name in documented), (path, name, bad, status)
        for name, schema in documented.items():
            good = [schema["minimum"], schema["maximum"]] if schema["type"] == "integer" else schema["enum"]
            for value in good:
                assert client.get(path, query_string={name: value}).status_code == 200, (path, name, value)


def test_every_string_path_parameter_is_an_id(client, doc):
    for path, item in doc["paths"].items():
        for param in item.get("get", {}).get("parameters", []):
            if param["in"] == "path" and param["schema"]["type"] == "string":
                url = path.replace("{" + param["name"] + "}", "bad%20id")
                response = client.get(url)
                assert response.status_code == 400 and param["name"] in response.get_json()["error"], url


# --- every GET endpoint's real JSON against the document ---

GET_URLS = [
    "/api/dashboard/overview", "/api/dashboard/quick-stats", "/api/agents/status", "/api/agents/agent_1",
    "/api/agents/health", "/api/training/status", "/api/training/history?days=30", "/api/training/schedule",
    "/api/metrics/quality?days=14", "/api/metrics/history/system_overall_quality?days=30",
    "/api/metrics/comparison", "/api/metrics/trends?days=14", "/api/system/health",
    "/api/system/health/history?hours=24", "/api/system/logs/recent?limit=20", "/api/system/errors",
    "/api/system/alerts", "/api/system/audit?limit=5", "/api/system/notifications?limit=10",
    "/api/logs/training?limit=10", "/api/logs/export?format=json",
    "/api/storyboard/projects", "/api/status", "/api/endpoints", "/api/openapi.json", "/healthz", "/readyz",
]


def _template_for(doc, url):
    """The document's path for `url`: itself if listed, else the template it fills."""
    path = url.split("?")[0]
    if path in doc["paths"]:
        return path
    for template in doc["paths"]:
        if re.fullmatch(re.sub(r"\\{[^}]+\\}", "[^/]+", re.escape(template)), path):
            return template
    raise AssertionError(f"{url} is not in the document")


def test_every_get_endpoint_answers_the_schema_the_document_gives(client, doc):
    project = client.post("/api/storyboard/project/create",
                          json={"name": "Docs", "scenes": [{"title": "One", "duration_sec": 2.5}]}).get_json()
    run = client.get("/api/training/history?days=30").get_json()[0]["run_id"]
    urls = GET_URLS + [f"/api/storyboard/project/{project['id']}", f"/api/training/runs/{run}"]
    documented_gets = {path for path, item in doc["paths"].items() if "get" in item}
    covered = {_template_for(doc, url) for url in urls}
    # every JSON GET of the document is exercised here (the stream, pages and /metrics are not JSON)
    json_gets = {p for p in documented_gets if "application/json" in doc["paths"][p]["get"]["responses"]["200"]["content"]}
    assert json_gets - covered == {"/api/training/session/{session_id}"}  # needs a started run: test_training_control
    for url in urls:
        response = client.get(url)
        assert response.status_code == 200, (url, response.get_data(as_text=True)[:300])
        content = doc["paths"][_template_for(doc, url)]["get"]["responses"]["200"]["content"]
        assert response.mimetype in content, (url, response.mimetype)
        schema = content[response.mimetype]["schema"]
        body = response.get_json()
        errors = [f"{e.instance_path}: {e.message}" for e in validator(doc, schema).iter_errors(body)]
        assert not errors, (url, errors[:5])
    quality = client.get("/api/metrics/quality?days=14").get_json()
    assert set(EXAMPLE_AGENTS) <= set(quality)


def test_a_wrong_answer_fails_the_documents_schema(doc):
    schema = operation(doc, "/api/agents/status")["responses"]["200"]["content"]["application/json"]["schema"]
    row = {"id": "a", "name": "A", "status": "online", "quality_score": 7.5, "last_updated": None,
           "processing_time_ms": 5, "improvement": None, "errors": 0}
    assert validator(doc, schema).is_valid([row])
    assert not validator(doc, schema).is_valid([{**row, "quality_score": "7.5"}])
    assert not validator(doc, schema).is_valid([{**row, "extra": 1}])
    quality = {"$ref": "#/components/schemas/MetricsQuality"}
    assert validator(doc, quality).is_valid({"timestamps": ["2026-01-01"], "system": [1.0], "a": [None], "warnings": []})
    assert not validator(doc, quality).is_valid({"timestamps": [], "system": [], "a": ["x"], "warnings": []})


# --- the docs page ---

def test_docs_page_loads_only_local_assets(client):
    response = client.get("/api/docs")
    assert response.status_code == 200 and response.mimetype == "text/html"
    html = response.get_data(as_text=True)
    assert 'data-spec-url="/api/openapi.json"' in html
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", html, re.S)
    assert scripts and all("src=" in attrs and not body.strip() for attrs, body in scripts)  # no inline code (CSP)
    assert not re.search(r"<[^>]*\s(?:style|on\w+)=", html)  # no inline styles or event handlers either
    urls = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert urls and all(u.startswith("/") or u == "data:," for u in urls), urls
    for url in urls:
        if url.startswith("/static/"):
            with client.get(url) as asset:
                assert asset.status_code == 200, url
    with client.get("/static/js/api_docs.js") as script:
        assert "https://" not in script.get_data(as_text=True)


def test_the_docs_page_is_replayed_from_the_cache_with_its_page_policy(make_app, orchestrator):
    client = make_app(orchestrator(days=0), RESPONSE_CACHE_SECONDS=60).test_client()
    first, again = client.get("/api/docs"), client.get("/api/docs")
    assert client.application.extensions["response_cache"].answers.entry(("/api/docs", (), "")) is not None
    assert again.get_data() == first.get_data() and again.headers == first.headers
    assert "script-src 'self'" in again.headers["Content-Security-Policy"]  # the page's policy, not the API's


# --- schemathesis: generated requests against the WSGI app ---

def _document(**config) -> dict:
    """The document of an app over an empty folder: the routes, the contract and the key settings, which is all
    it depends on."""
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app({"TESTING": True, "ORCHESTRATOR_PATH": Path(tmp), "DATABASE_PATH": Path(tmp) / "db.sqlite",
                          "LOG_FILE": None, "HEALTH_SAMPLE_SECONDS": 0, "INGEST_SECONDS": 0,
                          "TRAINING_RUNS_DIR": Path(tmp) / "runs", **config})
        return openapi.document(app)


# The server runs with API_KEY, so that its document says POSTs need the bearer key: schemathesis sends the
# key (the security scheme's credentials) and checks that a request without it is refused (ignored_auth).
# Excluded: the stream never ends; training start/stop would launch and kill real runs
# (tests/test_training_control.py and tests/test_live_run.py cover them).
# (schemathesis.pytest.from_fixture cannot be used: schemathesis 4.32 reads `request.node._nodeid`, which
# pytest 9 no longer has; so the document is loaded at import and the fixture's app is passed to each call.)
API_KEY = KEY
FUZZ_CONFIG = {"auth": {"openapi": {"bearerAuth": {"bearer": API_KEY}}}}
whole_schema = schemathesis.openapi.from_dict(_document(API_KEY=API_KEY),
                                              config=schemathesis.Config.from_dict(FUZZ_CONFIG))
# The test notification answers 202 to every keyed call, and ignored_auth then probes it without the key over
# HTTP, not through the WSGI app (a schema from a dict has no base URL): its key check is tested in
# test_notification_rules.py instead.
schema = whole_schema.exclude(path="/api/stream").exclude(method="POST", path_regex=r"^/api/training/").exclude(
    method="POST", path="/api/system/notifications/test")


def test_the_fuzzed_document_is_the_one_the_app_serves(keyed_app):
    served = keyed_app.test_client().get("/api/openapi.json").get_json()
    assert schema.raw_schema == served and "securitySchemes" in served["components"]


@pytest.fixture
def keyed_app(make_app, orchestrator):
    return make_app(orchestrator(), API_KEY=API_KEY)


@schema.parametrize()
@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_openapi_document(case, keyed_app):
    """Generated requests (valid and invalid) against the app over the example orchestrator's two weeks."""
    # ignored_auth's probes without the key (of a keyed GET: the audit) go through the schema's own transport
    case.operation.app = case.operation.schema.app = keyed_app
    case.call_and_validate(app=keyed_app, checks=FUZZ_CHECKS)


FUZZ_CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
               negative_data_rejection, ignored_auth, unsupported_method, allow_header_conformance]


# --- the event stream: each event is what the document says ---

def _events(body: bytes) -> list[tuple[str, object]]:
    frames = [f for f in body.decode().split("\n\n") if f.startswith("event: ")]
    return [(f.split("\n")[0][7:], json.loads(f.split("\n")[1][6:])) for f in frames]


# plan T37
def test_the_streams_events_are_the_documents(keyed_app):
    """schemathesis reads a short stream (STREAM_MAX_SECONDS=1) and holds each event to the document."""
    keyed_app.config.update(STREAM_MAX_SECONDS=1)
    case = whole_schema["/api/stream"]["GET"].Case()
    response = case.call_and_validate(app=keyed_app, checks=[status_code_conformance, content_type_conformance,
                                                              response_schema_conformance])
    assert response.headers["content-type"][0].startswith("text/event-stream")
    assert {name for name, _ in _events(response.content)} == {"training", "health", "alert"}


def test_a_wrong_event_fails_the_documents_stream_schema(keyed_app, monkeypatch):
    from dashboard.web import stream
    monkeypatch.setattr(stream, "events", lambda *args: iter(['event: training\ndata: {"is_running": "no"}\n\n']))
    case = whole_schema["/api/stream"]["GET"].Case()
    with pytest.raises(FailureGroup, match="SSE event violates schema"):
        case.call_and_validate(app=keyed_app, checks=[response_schema_conformance])


def test_bodies_are_held_to_their_json_types(client):
    """A number the document says is a number: a string or a boolean in its place is a 400 (it was accepted)."""
    for bad in ("5", True):
        response = client.post("/api/storyboard/project/create",
                               json={"name": "x", "scenes": [{"title": "t", "duration_sec": bad}]})
        assert response.status_code == 400 and "scenes.0.duration_sec" in response.get_json()["error"]
    ok = client.post("/api/storyboard/project/create", json={"name": "x", "scenes": [{"title": "t", "duration_sec": 5}]})
    assert ok.status_code == 201 and ok.get_json()["scenes"][0]["duration_sec"] == 5.0


def test_a_session_id_past_sqlites_integers_is_unknown_not_a_crash(client):
    response = client.get(f"/api/training/session/{2**63}")
    assert response.status_code == 404 and response.get_json()["error"] == f"unknown session_id: {2**63}"
