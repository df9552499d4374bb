"""A new endpoint is one row of endpoints.TABLE, one provider method and one contract model
(docs/adding-an-endpoint.md). Added here to apps built by the test: the route answers and checks its query,
the cloud proxy forwards it to a real upstream (our own app in local mode, served on 127.0.0.1) and holds the
answer to the model, and /api/endpoints, the OpenAPI document and the response cache know it."""
from __future__ import annotations

import threading

import pytest
from pydantic import TypeAdapter, ValidationError
from werkzeug.serving import make_server

from dashboard.cloud import provider as cloud_provider
import data_providers
from dashboard.web import endpoints
from dashboard.web import response_cache
from app import create_app
from dashboard.cloud.provider import CloudDataProvider
from dashboard.contract import MetricsQuality, Payload, WithWarnings
from dashboard.local.provider import LocalDataProvider
from dashboard.web.queries import Days
from servers import free_port


# --- the three things a new endpoint is ---

class AgentCount(WithWarnings):
    """GET /api/agents/count: how many agents there are, for a window of `days`."""

    days: int
    agents: int


ROW = endpoints.get("/api/agents/count", "agent_count", AgentCount,
                    "How many agents the dashboard lists, for the last `days` days.", query=Days)


class CountingProvider(LocalDataProvider):
    """The local provider with the new method (in the tree: a DataProvider abstract method and its body here)."""

    def agent_count(self, days: int) -> Payload:
        agents, warnings = self.agents_status()
        return Payload({"days": days, "agents": len(agents)}, warnings)


@cloud_provider.forwarding([ROW])
class CountingCloud(CloudDataProvider):
    """The cloud provider forwards the new row like every other (in the tree: nothing to write)."""


@pytest.fixture
def with_row(monkeypatch):
    """The table with ROW, and the providers with its method, as create_app will pick them."""
    monkeypatch.setattr(endpoints, "TABLE", endpoints.TABLE + (ROW,))
    monkeypatch.setitem(data_providers.PROVIDERS, "local", f"{__name__}:CountingProvider")
    monkeypatch.setitem(data_providers.PROVIDERS, "cloud", f"{__name__}:CountingCloud")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")


@pytest.fixture
def local(with_row, make_app, orchestrator):
    return make_app(orchestrator())


@pytest.fixture
def upstream(local):
    """`local` served over HTTP on 127.0.0.1 (werkzeug, a thread), as a cloud instance would be."""
    server = make_server("127.0.0.1", free_port(), local, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join()


@pytest.fixture
def cloud(upstream, tmp_path):
    """A cloud-mode app whose upstream is `upstream`."""
    app = create_app({"TESTING": True, "ENVIRONMENT": "cloud", "CLOUD_API_URL": upstream, "CLOUD_API_KEY": "k" * 32,
                      "CLOUD_ALLOW_INSECURE_HTTP": True, "CLOUD_CACHE_SECONDS": 0, "RESPONSE_CACHE_SECONDS": 0,
                      "ORCHESTRATOR_PATH": tmp_path / "absent", "DATABASE_PATH": tmp_path / "cloud.sqlite",
                      "LOG_FILE": None, "HEALTH_SAMPLE_SECONDS": 0, "TRAINING_RUNS_DIR": tmp_path / "runs"})
    yield app
    app.extensions["provider"].client.close()


# --- what follows from them ---

def test_the_route_answers_and_checks_its_query(local):
    client = local.test_client()
    body = client.get("/api/agents/count?days=3").get_json()
    assert body["days"] == 3 and body["agents"] == len(client.get("/api/agents/status").get_json()) == 6
    assert client.get("/api/agents/count").get_json()["days"] == 7  # the model's default
    bad = client.get("/api/agents/count?days=x")
    assert bad.status_code == 400 and bad.get_json()["error"] == "days must be an integer 1-365, got 'x'"
    TypeAdapter(AgentCount).validate_python(body)


def test_the_cloud_proxy_forwards_it_and_holds_it_to_the_model(cloud, local, monkeypatch):
    assert type(cloud.extensions["provider"]) is CountingCloud
    client = cloud.test_client()
    assert client.get("/api/agents/count?days=3").get_json() == local.test_client().get(
        "/api/agents/count?days=3").get_json()
    assert client.get("/api/agents/count?days=400").status_code == 400  # checked here, never sent
    monkeypatch.setattr(CountingProvider, "agent_count", lambda self, days: Payload({"days": "x"}, []))
    wrong = client.get("/api/agents/count?days=5")
    assert wrong.status_code == 502 and "upstream response invalid: days" in wrong.get_json()["error"]


def test_the_document_and_the_endpoint_list_show_it(local):
    client = local.test_client()
    listed = {row["path"]: row for row in client.get("/api/endpoints").get_json()}
    assert listed["/api/agents/count"] == {"path": "/api/agents/count", "methods": ["GET"],
                                           "description": ROW.summary}
    doc = client.get("/api/openapi.json").get_json()
    op = doc["paths"]["/api/agents/count"]["get"]
    assert op["operationId"] == "agent_count" and op["summary"] == ROW.summary
    assert op["parameters"] == [{"name": "days", "in": "query", "required": False,
                                 "description": "days back from today (1-365, default 7)",
                                 "schema": {"type": "integer", "minimum": 1, "maximum": 365, "default": 7}}]
    schema = op["responses"]["200"]["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/AgentCount"}
    assert {"400", "502", "503", "504"} <= set(op["responses"])
    assert doc["components"]["schemas"]["AgentCount"]["required"] == ["warnings", "days", "agents"]


def test_the_response_cache_keys_it_by_its_query_model(local):
    params_of = response_cache.query_params_of(local)
    assert params_of("/api/agents/count") == {"days"}
    assert params_of("/api/agents/status") == frozenset()


def test_a_row_without_its_provider_method_fails_at_start_up(monkeypatch, make_app, orchestrator):
    monkeypatch.setattr(endpoints, "TABLE", endpoints.TABLE + (ROW,))
    with pytest.raises(RuntimeError, match="/api/agents/count: the provider LocalDataProvider has no method"):
        make_app(orchestrator(days=0))


# --- the table and the provider contract agree ---

def test_every_provider_method_has_its_row_and_every_row_its_method():
    abstract = {name for name, member in vars(data_providers.DataProvider).items()
                if getattr(member, "__isabstractmethod__", False)}
    served = {row.provider for row in endpoints.TABLE if row.provider}
    assert served == abstract - {"source_status"}  # /api/status reads it inside its own view
    assert len({row.endpoint for row in endpoints.TABLE}) == len(endpoints.TABLE)
    forwarded = [m.row for m in vars(CloudDataProvider).values() if hasattr(m, "row")]
    # the log download (a stream) and the audit (the proxy's own writes) are methods of their own
    assert {row.provider for row in forwarded} == served - {"export_logs", "system_audit"}


def test_the_named_responses_are_the_rows_models():
    """contract.RESPONSES (the names the tests check answers by) says what the rows say."""
    from dashboard.contract import RESPONSES

    models = {row.name: row.response for row in endpoints.TABLE}
    assert {name: models.get(name) for name in RESPONSES} == RESPONSES


# --- the metrics_quality answer is a model too ---

def test_metrics_quality_is_held_to_its_model():
    ok = {"timestamps": ["2026-01-01", "2026-01-02"], "system": [1.0, None], "agent_1": [None, 2], "warnings": []}
    MetricsQuality.model_validate(ok)
    for bad, message in [({**ok, "agent_1": [None]}, "agent_1: 1 values for 2 timestamps"),
                         ({**ok, "agent_1": ["7.5", None]}, "agent_1.0"),
                         ({**ok, "agent_1": [True, None]}, "agent_1.0"),
                         ({k: v for k, v in ok.items() if k != "timestamps"}, "timestamps")]:
        with pytest.raises(ValidationError, match=message.replace(".", r"\.")):
            MetricsQuality.model_validate(bad)
