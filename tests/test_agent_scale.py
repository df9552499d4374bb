"""A daily report naming 25,000 agents: every endpoint answers, the lists hold the first MAX_AGENTS agents
with a warning naming the rest, and the counts cover every agent (docs/performance.md "Many agents")."""
from __future__ import annotations

import json
import re
import shutil

import pytest

from agents_scale import scale_report  # bench/agents_scale.py: the bench's data set, built the same way
from conftest import get_route_urls
from dashboard.config import ConfigError, load_config

AGENTS = 25_000
CAP = 1000


@pytest.fixture(scope="module")
def scale_root(tmp_path_factory, _built):
    root = tmp_path_factory.mktemp("scale") / "orchestrator"
    shutil.copytree(_built(None, 14), root)
    scale_report(root, AGENTS)
    return root


def get_urls(app, ids: dict) -> list[str]:
    """Every GET rule of the app's route table with its ids filled in."""
    return get_route_urls(app, ids)


def header_warnings(response) -> list[str]:
    return json.loads(response.headers.get("X-Data-Warnings", "[]"))


def test_25000_agents_every_endpoint_answers_with_the_first_1000_listed(make_app, scale_root):
    app = make_app(scale_root)
    client = app.test_client()
    project = client.post("/api/storyboard/project/create", json={"name": "scale"}).get_json()["id"]
    run = client.get("/api/training/history").get_json()[0]["run_id"]
    ids = {"agent_id": "agent_1", "metric_name": "system_overall_quality", "project_id": project, "session_id": 1,
           "run_id": run}
    for url in get_urls(app, ids):
        response = client.get(url)
        response.get_data()  # a streamed export to its end
        # session 1: none here (the runs read from the files are not dashboard sessions)
        assert response.status_code == (404 if url.startswith("/api/training/session/") else 200), url

    status = client.get("/api/agents/status")
    rows = status.get_json()
    listed = [row["id"] for row in rows]
    assert len(rows) == CAP
    assert listed[:6] == ["agent_1", "agent_2", "agent_3", "agent_5a", "agent_7", "agent_8"]  # natural id order
    assert listed[-1] == "agent_s994"
    cap_warning = [w for w in header_warnings(status) if "MAX_AGENTS" in w]
    assert cap_warning == ["agents: 25000 known, only the first 1000 in id order are listed (MAX_AGENTS=1000); "
                           "left out: agent_s995, agent_s996, agent_s997, agent_s998, agent_s999 and 23995 more"]

    # Counts cover every agent, listed or not: the report's 24,994 extra agents are online when the report
    # scores them, offline when it has no data for them (every seventh).
    stats = client.get("/api/dashboard/quick-stats").get_json()
    health = client.get("/api/agents/health").get_json()
    extra = AGENTS - 6
    own_online = sum(1 for row in rows[:6] if row["status"] in ("online", "training"))
    assert stats["agents_total"] == health["total"] == AGENTS
    assert stats["agents_online"] == own_online + extra - extra // 7
    assert health["by_status"]["offline"] >= extra // 7
    assert sum(health["by_status"].values()) == AGENTS
    assert stats["agents_online"] == health["by_status"]["online"] + health["by_status"]["training"]
    assert cap_warning[0] in stats["warnings"] and cap_warning[0] in health["warnings"]

    # Whatever names agents one by one names only the listed ones.
    listed_set = set(listed)
    assert set(health["below_threshold"]) <= listed_set and health["below_threshold"]
    alerts = client.get("/api/system/alerts").get_json()
    agent_alerts = {a["source"] for a in alerts if a["id"].startswith("agent.")}
    assert agent_alerts and agent_alerts <= listed_set
    assert stats["active_alerts"] == len(alerts)
    overview = client.get("/api/dashboard/overview").get_json()
    assert set(overview["improvements"]) <= listed_set and cap_warning[0] in overview["warnings"]
    comparison = client.get("/api/metrics/comparison").get_json()
    assert {row["id"] for row in comparison} == listed_set
    quality = client.get("/api/metrics/quality?days=14").get_json()
    assert set(quality) - {"timestamps", "system", "warnings"} == listed_set
    trends = client.get("/api/metrics/trends?days=14").get_json()
    assert set(trends["agents"]) == listed_set
    scraped = client.get("/metrics").get_data(as_text=True)
    gauged = set(re.findall(r'^dashboard_agent_quality_score\{agent="([^"]+)"\}', scraped, re.M))
    assert gauged and gauged <= listed_set

    # An agent left out of the lists is still there by its id.
    left_out = client.get("/api/agents/agent_s24994").get_json()
    assert left_out["quality_score"] is not None and left_out["name"] == "Scale Agent 24994"


def test_max_agents_sets_the_cap(make_app, scale_root):
    client = make_app(scale_root, MAX_AGENTS=10).test_client()
    status = client.get("/api/agents/status")
    assert len(status.get_json()) == 10
    assert any("only the first 10 in id order are listed (MAX_AGENTS=10)" in w and "24985 more" in w
               for w in header_warnings(status))
    assert client.get("/api/dashboard/quick-stats").get_json()["agents_total"] == AGENTS


def test_max_agents_is_validated():
    assert load_config({})["MAX_AGENTS"] == CAP
    assert load_config({"MAX_AGENTS": "25000"})["MAX_AGENTS"] == 25000
    for bad in ("0", "-1", "many", "1.5"):
        with pytest.raises(ConfigError, match="MAX_AGENTS"):
            load_config({"MAX_AGENTS": bad})
