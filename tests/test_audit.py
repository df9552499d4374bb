"""The audit of writes and the closed cloud proxy (docs/access.md).

- every POST under /api/, whatever its outcome, is an audit row with its key's name, client and status,
  listed newest first by GET /api/system/audit (admin), and left out of the recent logs;
- a cloud proxy without keys of its own refuses writes, with our own app in local mode as its upstream
  (real gunicorn on both sides); with a key of its own it writes; it never passes on the upstream's pid,
  command or output path.
"""
from __future__ import annotations

import shlex
from contextlib import closing
from pathlib import Path
from types import SimpleNamespace

import database
from app import create_app
from conftest import poll
from dashboard.store import api_keys
from dashboard.web.errors import ApiError
from dashboard.web import hardening
from servers import Gunicorn
from test_keys import INHERITED, NO_PROXY, SLEEPER, bearer, create_key, kill_runs

CREATE = "/api/storyboard/project/create"
UPSTREAM_KEY = "upstream-key-0d4e2b7c9a1f3856"


def test_every_write_is_audited_with_its_key_client_and_outcome(make_app, orchestrator, tmp_path, monkeypatch):
    monkeypatch.setattr(hardening, "time", SimpleNamespace(time=lambda: 1_800_000_030.0))  # one rate window
    client = make_app(orchestrator(days=2), POST_RATE_LIMIT=6).test_client()
    assert client.post(CREATE, json={"name": "before any key"}).status_code == 201
    with closing(database.connect(tmp_path / "db.sqlite")) as conn:
        admin = api_keys.create(conn, "admin", "admin")
        reader = api_keys.create(conn, "reader", "read")
    outcomes = [
        (client.post(CREATE, json={"name": "x"}), None),  # no key: 401
        (client.post(CREATE, json={"name": "x"}, headers=bearer(admin + "x")), None),  # unknown key: 401
        (client.post(CREATE, json={"name": "x"}, headers=bearer(reader)), "reader"),  # no scope: 403
        (client.post(CREATE, json={"nam": "x"}, headers=bearer(admin)), "admin"),  # bad body: 400
        (client.post(CREATE, json={"name": "ok"}, headers=bearer(admin)), "admin"),  # 201
        (client.post("/api/no/such", json={}, headers=bearer(admin)), "admin"),  # no route: 404
        (client.post(CREATE, json={"name": "x"}, headers=bearer(admin)), "admin"),  # the 7th of 6 a minute: 429
    ]
    assert [r.status_code for r, _ in outcomes] == [401, 401, 403, 400, 201, 404, 429]

    status = client.get("/api/system/audit?limit=50", headers=bearer(reader)).status_code
    assert status == 403  # the audit needs admin
    audit = client.get("/api/system/audit?limit=50", headers=bearer(admin)).get_json()
    expected = [(key, r.status_code) for r, key in outcomes]
    assert [(e["key"], e["status"]) for e in audit] == list(reversed(expected)) + [("anonymous", 201)]
    assert {(e["client"], e["method"]) for e in audit} == {("127.0.0.1", "POST")}
    assert audit[1]["path"] == "/api/no/such" and all(e["path"] == CREATE for e in audit if e["status"] != 404)
    assert len(client.get("/api/system/audit?limit=2", headers=bearer(admin)).get_json()) == 2
    assert client.get("/api/system/audit?limit=0", headers=bearer(admin)).status_code == 400

    logs = client.get("/api/system/logs/recent?limit=1000").get_json()
    assert not [line for line in logs if line["source"] == "audit"]  # not a log line
    for key in (admin, reader):
        assert key not in repr(audit)


def test_a_client_without_a_key_is_rate_limited_and_its_flood_adds_one_audit_row_a_minute(make_app, orchestrator,
                                                                                          tmp_path, monkeypatch):
    clock = SimpleNamespace(time=lambda: 1_800_000_030.0)
    monkeypatch.setattr(hardening, "time", clock)
    client = make_app(orchestrator(days=1), POST_RATE_LIMIT=3).test_client()
    with closing(database.connect(tmp_path / "db.sqlite")) as conn:
        admin = api_keys.create(conn, "admin", "admin")
    flood = [client.post(CREATE, json={"name": "x"}) for _ in range(12)]
    assert [r.status_code for r in flood] == [401] * 3 + [429] * 9
    assert flood[-1].headers["Retry-After"] == "30" and flood[-1].get_json()["retry_after_seconds"] == 30
    clock.time = lambda: 1_800_000_090.0  # the next minute
    flood += [client.post(CREATE, json={"name": "x"}) for _ in range(5)]
    assert [r.status_code for r in flood[12:]] == [401] * 3 + [429] * 2
    audit = client.get("/api/system/audit?limit=50", headers=bearer(admin)).get_json()
    # each minute: the requests within the limit, then its first refusal
    assert [e["status"] for e in reversed(audit)] == [401, 401, 401, 429] * 2
    assert all(e["key"] is None for e in audit)


def test_a_write_whose_answer_turns_out_otherwise_than_its_routes_success_is_audited_as_answered(
        make_app, orchestrator, tmp_path):
    app = make_app(orchestrator(days=1))

    def write_then(status: int):  # a route that stores something, then answers `status`
        with database.transaction(database.get_db()):
            database.get_db().execute("INSERT INTO events (timestamp, event_type, message) VALUES ('t', 'x', 'y')")
        if status >= 400:
            raise ApiError(status, "refused after the write")
        return {"ok": True}, status

    app.add_url_rule("/api/test/write/<int:status>", "write_then", write_then, methods=["POST"])
    client = app.test_client()

    assert client.post(CREATE, json={"name": "one commit"}).status_code == 201  # one commit: test_freshness
    assert client.post("/api/test/write/409", json={}).status_code == 409
    assert client.post("/api/test/write/200", json={}).status_code == 200
    assert client.post(CREATE, json={"nam": "x"}).status_code == 400  # refused before any write

    audit = client.get("/api/system/audit?limit=10").get_json()
    assert [(e["path"], e["status"]) for e in audit] == [
        (CREATE, 400), ("/api/test/write/200", 200), ("/api/test/write/409", 409), (CREATE, 201)]
    projects = client.get("/api/storyboard/projects").get_json()
    assert [p["name"] for p in projects] == ["one commit"]


# --- the cloud proxy, over gunicorn ---

def upstream_and_proxy(root: Path, tmp_path: Path, **proxy_env: str) -> tuple[Gunicorn, Gunicorn]:
    upstream = Gunicorn(root, tmp_path / "upstream", unset=INHERITED, new_session=True, API_KEY=UPSTREAM_KEY,
                        TRAINING_COMMAND=f"python -c {shlex.quote(SLEEPER)}", TRAINING_STOP_GRACE_SECONDS="3",
                        **NO_PROXY)
    proxy = Gunicorn(tmp_path / "absent", tmp_path / "proxy", unset=INHERITED, to_file=True, ENVIRONMENT="cloud",
                     CLOUD_API_URL=upstream.base, CLOUD_API_KEY=UPSTREAM_KEY, CLOUD_ALLOW_INSECURE_HTTP="true",
                     CLOUD_CACHE_SECONDS="0", **NO_PROXY, **proxy_env)
    return upstream, proxy


def test_a_proxy_without_keys_refuses_writes_and_hides_the_upstreams_processes(orchestrator, tmp_path):
    upstream, proxy = upstream_and_proxy(orchestrator(days=2), tmp_path)
    try:
        upstream.start()
        proxy.start()
        # reads pass through; every write is refused, saying what the proxy needs
        assert proxy.get_json("/api/agents/status")[0] == 200
        for path, body in ((CREATE, {"name": "x"}), ("/api/training/start", {}), ("/api/training/stop", {})):
            status, answer = proxy.post_json(path, body, headers=bearer(UPSTREAM_KEY))
            assert status == 403 and "keys of its own" in answer["error"], (path, answer)
        assert "writes are refused (403) until it has keys of its own" in proxy.logs()
        assert upstream.get_json("/api/storyboard/projects")[1] == []  # nothing reached the upstream
        audit = proxy.get_json("/api/system/audit")[1]  # no key exists: the proxy's audit is open
        assert [(e["key"], e["status"]) for e in audit] == [(None, 403)] * 3

        # a run started on the upstream: its session through the proxy has no pid, command or output path
        status, started = upstream.post_json("/api/training/start", {}, headers=bearer(UPSTREAM_KEY))
        assert status == 202, started
        path = f"/api/training/session/{started['session_id']}"
        direct, proxied = upstream.get_json(path)[1], proxy.get_json(path)[1]
        assert direct["pid"] and direct["command"] and direct["output_path"]
        assert (proxied["pid"], proxied["command"], proxied["output_path"]) == (None, None, None)
        assert {k: v for k, v in proxied.items() if k not in ("pid", "command", "output_path")} == \
               {k: v for k, v in direct.items() if k not in ("pid", "command", "output_path")}
        assert direct["started_by"] == proxied["started_by"] == "API_KEY"
        upstream.post_json("/api/training/stop", {}, headers=bearer(UPSTREAM_KEY), timeout=30)
    finally:
        kill_runs(tmp_path / "upstream" / "runs")
        proxy.stop()
        upstream.stop()


def test_a_proxy_with_a_key_of_its_own_writes_with_it(orchestrator, tmp_path):
    upstream, proxy = upstream_and_proxy(orchestrator(days=2), tmp_path)
    from test_keys import keys_cli
    try:
        upstream.start()
        editor = create_key(proxy, "editor", "admin")  # created before the proxy starts: its log says so
        proxy.start()
        poll(proxy.logs, lambda text: "cloud proxy: writes need a key of this proxy" in text)
        assert proxy.post_json(CREATE, {"name": "x"})[0] == 401
        status, project = proxy.post_json(CREATE, {"name": "through the proxy"}, headers=bearer(editor))
        assert status == 201, project
        assert [p["name"] for p in upstream.get_json("/api/storyboard/projects")[1]] == ["through the proxy"]
        # the proxy's audit names its own key; the upstream's, the proxy's key there
        audit = proxy.get_json("/api/system/audit", headers=bearer(editor))[1]
        assert [(e["key"], e["status"]) for e in audit] == [("editor", 201), (None, 401)]
        upstream_audit = upstream.get_json("/api/system/audit", headers=bearer(UPSTREAM_KEY))[1]
        assert [(e["key"], e["status"]) for e in upstream_audit] == [("API_KEY", 201)]
        assert keys_cli(proxy, "revoke", "editor").returncode == 0
        assert proxy.post_json(CREATE, {"name": "y"}, headers=bearer(editor))[0] == 401  # still closed
    finally:
        proxy.stop()
        upstream.stop()


def test_anonymous_writes_through_a_proxy_only_when_allowed(tmp_path):
    def proxy(**config):
        return create_app({"TESTING": True, "ENVIRONMENT": "cloud", "CLOUD_API_URL": "http://127.0.0.1:9",
                           "CLOUD_API_KEY": "k" * 32, "CLOUD_ALLOW_INSECURE_HTTP": True, "CLOUD_TIMEOUT_SECONDS": 1,
                           "CLOUD_CONNECT_TIMEOUT_SECONDS": 0.2, "CLOUD_BREAKER_FAILURES": 0, "LOG_FILE": None,
                           "ORCHESTRATOR_PATH": tmp_path / "absent", "DATABASE_PATH": tmp_path / "db.sqlite",
                           "HEALTH_SAMPLE_SECONDS": 0, **config}).test_client()

    refused = proxy().post(CREATE, json={"name": "x"})
    assert refused.status_code == 403 and "CLOUD_ALLOW_ANONYMOUS_WRITES" in refused.get_json()["error"]
    # let through: the upstream (a closed port) answers nothing
    assert proxy(CLOUD_ALLOW_ANONYMOUS_WRITES=True).post(CREATE, json={"name": "x"}).status_code in (502, 503, 504)


def test_the_log_views_reach_their_newest_events_past_any_number_of_audit_rows(tmp_path):
    """Writes add audit rows without bound; the log views' query walks an index that leaves them out."""
    from dashboard.store import audit, events
    path = tmp_path / "db.sqlite"
    database.migrate(path)
    with closing(database.connect(path)) as conn:
        events.record_event(conn, "training_started", "a log line")
        for n in range(200):
            audit.record(conn, "anonymous", "127.0.0.1", "POST", "/api/storyboard/project/create", 201)
        conn.commit()
        statements: list[str] = []
        conn.set_trace_callback(statements.append)
        assert [e["message"] for e in events.newest_events(conn, 5)] == ["a log line"]
        conn.set_trace_callback(None)
        query = next(s for s in statements if s.lstrip().startswith("SELECT"))
        plan = " ".join(row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + query))
    assert "idx_events_log_time" in plan and "TEMP B-TREE" not in plan, plan
