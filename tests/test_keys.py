"""Named API keys and scopes (docs/access.md): real gunicorn on 127.0.0.1, a real SQLite file, the real
`flask --app app keys` commands run as subprocesses with the server's environment.

- a `read` key reads and gets 403 on training start; an `operate` key starts and stops a run but gets 403 on
  a storyboard write; `admin` keys (a named one and API_KEY) write; keys are valid together;
- a revoked key gets 401 at once on every worker, cached answers included, while another key still reads;
- a key never shows in the log file, the events table, the database file or `keys list`;
- in-process: the scopes of the endpoint table, expiry, and the response cache never answering a request
  whose key would not be allowed.
"""
from __future__ import annotations

import shlex
import sqlite3
import subprocess
import sys
import threading
from collections import Counter
from contextlib import closing
from pathlib import Path

import pytest

import database
from conftest import PROJECT, poll
from dashboard.store import api_keys
from dashboard.web import endpoints
from servers import Gunicorn

FLASK = Path(sys.executable).with_name("flask")
API_KEY = "admin-env-key-8f3a1c5e9b7d2064"
# Settings only a test gives: not inherited from the environment that runs the tests.
INHERITED = ("CLOUD_", "API_KEY", "REQUIRE_AUTH", "ENVIRONMENT")
NO_PROXY = {"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
# At most two connections per worker: a burst of concurrent requests reaches every worker (test_freshness).
SPREAD = {"GUNICORN_CMD_ARGS": "--worker-connections 2"}
SLEEPER = "import time; print('ready', flush=True); time.sleep(120)"
READ = "/api/agents/status"


def keys_cli(server: Gunicorn, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """`flask --app app keys ARGS` with the server's environment (its database, its log file)."""
    proc = subprocess.run([str(FLASK), "--app", "app", "keys", *args], cwd=PROJECT, capture_output=True, text=True,
                          env={**server.env, "INGEST_SECONDS": "0"}, timeout=60)
    assert not check or proc.returncode == 0, proc.stderr[-2000:]
    return proc


def create_key(server: Gunicorn, name: str, scope: str) -> str:
    """A new key, as `keys create` prints it (its only line on stdout)."""
    key = keys_cli(server, "create", name, "--scope", scope).stdout.strip()
    assert key.startswith(api_keys.PREFIX) and "\n" not in key
    return key


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def answers_per_worker(server: Gunicorn, path: str, status: int) -> Counter:
    """How many answers of `status` to GET `path` each worker (pid) has logged."""
    needle = f"GET {path} {status} "
    text = server.log_path.read_text() if server.log_path.exists() else ""
    return Counter(line.split("[")[1].split("]")[0] for line in text.splitlines() if needle in line)


def on_every_worker(server: Gunicorn, path: str, headers: dict, status: int, workers: int = 2) -> None:
    """GET `path` in concurrent bursts over fresh connections until every worker has answered `status` since
    now; every answer must be `status`."""
    before = answers_per_worker(server, path, status)
    sent = [0]

    def burst():
        seen: list[int] = []
        threads = [threading.Thread(target=lambda: seen.append(server.request("GET", path, headers=headers)[0]))
                   for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert seen == [status] * 8, seen
        sent[0] += 8
        # once every answer sent has its log line: which workers answered since `before`
        counts = poll(lambda: answers_per_worker(server, path, status),
                      lambda c: sum((c - before).values()) >= sent[0])[-1]
        return len(counts - before)

    poll(burst, lambda answered: answered == workers, interval=0)


def server_with_keys(orchestrator, tmp_path: Path, **env: str) -> Gunicorn:
    return Gunicorn(orchestrator(), tmp_path / "srv", unset=INHERITED, new_session=True, GUNICORN_WORKERS="2",
                    GUNICORN_THREADS="4", RESPONSE_CACHE_SECONDS="60", REQUIRE_AUTH_FOR_READS="true",
                    API_KEY=API_KEY, API_KEY_LAST_USED_SECONDS="0.2", POST_RATE_LIMIT="0", **SPREAD, **NO_PROXY, **env)


def kill_runs(runs_dir: Path) -> None:
    from test_freshness import kill_runs as kill
    kill(runs_dir)


# --- over gunicorn ---

def test_each_scope_does_what_it_may_and_no_more(orchestrator, tmp_path):
    server = server_with_keys(orchestrator, tmp_path, TRAINING_COMMAND=f"python -c {shlex.quote(SLEEPER)}",
                              TRAINING_STOP_GRACE_SECONDS="3")
    try:
        server.start()
        reader, operator, admin = (create_key(server, n, s) for n, s in
                                   (("reader", "read"), ("operator", "operate"), ("admin", "admin")))
        keys = (reader, operator, admin)
        assert len(set(keys)) == 3

        # reads: any of the keys, valid together; none without one; the probes stay open
        for key in keys + (API_KEY,):
            assert server.request("GET", READ, headers=bearer(key))[0] == 200
        assert server.request("GET", READ)[0] == 401
        assert server.request("GET", READ, headers=bearer(reader[:-1] + ("A" if reader[-1] != "A" else "B")))[0] == 401
        for path in ("/healthz", "/readyz", "/api/status"):
            assert server.request("GET", path)[0] == 200, path
        assert server.request("GET", "/metrics")[0] == 401
        assert server.request("GET", "/metrics", headers=bearer(reader))[0] == 200

        # read: 403 on training start, naming the scope it needs
        status, body = server.post_json("/api/training/start", {}, headers=bearer(reader))
        assert status == 403 and "operate" in body["error"], body

        # operate: starts and stops a run, but may not write the storyboard
        status, started = server.post_json("/api/training/start", {}, headers=bearer(operator))
        assert status == 202, started
        status, stopped = server.post_json("/api/training/stop", {}, headers=bearer(operator), timeout=30)
        assert status in (200, 202), stopped
        status, body = server.post_json("/api/storyboard/project/create", {"name": "x"}, headers=bearer(operator))
        assert status == 403 and "admin" in body["error"], body

        # admin: a named key and API_KEY both write
        for key in (admin, API_KEY):
            status, body = server.post_json("/api/storyboard/project/create", {"name": "by admin"}, headers=bearer(key))
            assert status == 201, body

        # the run says who started and stopped it
        history = poll(lambda: server.get_json("/api/training/history?days=1", headers=bearer(reader))[1],
                       lambda runs: any(r["session_id"] == started["session_id"] and r["status"] != "running"
                                        for r in runs))[-1]
        run = next(r for r in history if r["session_id"] == started["session_id"])
        assert (run["started_by"], run["stopped_by"]) == ("operator", "operator")
        status, record = server.get_json(f"/api/training/runs/{run['run_id']}", headers=bearer(reader))
        assert status == 200 and (record["started_by"], record["stopped_by"]) == ("operator", "operator")

        # last used: written by the workers' own thread within API_KEY_LAST_USED_SECONDS, never the key
        listing = poll(lambda: keys_cli(server, "list").stdout,
                       lambda out: all(line.split()[3] != "-" for line in out.splitlines()[1:]))[-1]
        assert [line.split()[:2] for line in listing.splitlines()] == [
            ["name", "scope"], ["reader", "read"], ["operator", "operate"], ["admin", "admin"]]
        assert_nowhere(server, keys + (API_KEY,), listing)
    finally:
        kill_runs(tmp_path / "srv" / "runs")
        server.stop()


def assert_nowhere(server: Gunicorn, keys: tuple[str, ...], listing: str) -> None:
    """No key in the log file, the events table (every column), the database's files or `keys list`."""
    db = Path(server.env["DATABASE_PATH"])
    with closing(sqlite3.connect(db)) as conn:
        events = "\n".join(repr(tuple(row)) for row in conn.execute("SELECT * FROM events"))
        assert conn.execute("SELECT COUNT(*) FROM events WHERE event_type = 'api_write'").fetchone()[0] > 0
    stored = b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*") if p.is_file())
    logs = server.logs()
    assert "GET /api/agents/status 200" in logs  # the log is the one the requests went to
    for key in keys:
        # dsk_<id>_<secret>: the secret may hold "_" itself
        secret = key.split("_", 2)[2] if key.startswith(api_keys.PREFIX) else key
        for text in (logs, events, listing):
            assert key not in text and secret not in text
        assert key.encode() not in stored and secret.encode() not in stored


def test_a_revoked_key_gets_401_at_once_on_every_worker(orchestrator, tmp_path):
    with server_with_keys(orchestrator, tmp_path) as server:
        doomed, kept = create_key(server, "doomed", "read"), create_key(server, "kept", "read")
        # both keys read on both workers, and each worker keeps the answer (RESPONSE_CACHE_SECONDS=60)
        on_every_worker(server, READ, bearer(doomed), 200)
        on_every_worker(server, READ, bearer(kept), 200)
        assert keys_cli(server, "revoke", "doomed").stdout.strip() == "key doomed revoked"
        # no request after the revocation gets a 200, on any worker, cached or not
        on_every_worker(server, READ, bearer(doomed), 401)
        on_every_worker(server, READ, bearer(kept), 200)
        status, body = server.get_json(READ, headers=bearer(doomed))
        assert status == 401 and body["error"] == "invalid API key (unknown, expired or revoked)"
        assert "doomed" in keys_cli(server, "list").stdout  # kept for the record
        assert keys_cli(server, "revoke", "doomed", check=False).returncode != 0


def test_the_cli_refuses_bad_names_and_scopes_and_a_taken_name(orchestrator, tmp_path):
    server = server_with_keys(orchestrator, tmp_path)  # its environment only: the CLI needs no server
    create_key(server, "ci", "read")
    for args in (("create", "ci", "--scope", "read"), ("create", "has space", "--scope", "read"),
                 ("create", "anonymous", "--scope", "admin"), ("create", "x", "--scope", "root"),
                 ("create", "y", "--scope", "read", "--expires", "0"), ("revoke", "nobody")):
        proc = keys_cli(server, *args, check=False)
        assert proc.returncode != 0 and proc.stdout == "", args
    assert keys_cli(server, "list").stdout.count("\n") == 2  # the header and ci


# --- in-process ---

def test_every_row_has_its_scope_by_construction():
    scopes = {row.rule: row.scope for row in endpoints.TABLE}
    assert {rule for rule, scope in scopes.items() if scope == "open"} == {"/", "/healthz", "/readyz", "/api/status"}
    assert {rule for rule, scope in scopes.items() if scope == "operate"} == {"/api/training/start",
                                                                           "/api/training/stop"}
    for row in endpoints.TABLE:
        if "POST" in row.methods and row.scope != "operate":
            assert row.scope == "admin", row.rule
    assert scopes["/api/system/audit"] == "admin" and scopes["/metrics"] == "read"
    new = endpoints.post("/api/system/alerts/<alert_id>/ack", "ack_alert", "json_object", "Ack.")
    assert new.scope == "admin" and endpoints.get("/api/x", "x", "json_object", "X.").scope == "read"
    with pytest.raises(ValueError):
        endpoints.post("/api/y", "y", "json_object", "Y.", scope="root")


def test_the_response_cache_answers_only_requests_that_would_be_allowed(make_app, orchestrator, tmp_path):
    app = make_app(orchestrator(days=2), RESPONSE_CACHE_SECONDS=60, REQUIRE_AUTH_FOR_READS=True)
    client = app.test_client()
    with closing(database.connect(tmp_path / "db.sqlite")) as conn:
        reader = api_keys.create(conn, "reader", "read")
        admin = api_keys.create(conn, "admin", "admin")
        assert client.get(READ).status_code == 401  # keys exist: reads need one
        assert client.get(READ, headers=bearer(reader)).status_code == 200  # now kept
        assert client.get("/api/system/audit", headers=bearer(admin)).status_code == 200  # kept too
        assert len(app.extensions["response_cache"]) == 2
        assert client.get(READ).status_code == 401
        assert client.get(READ, headers=bearer("dsk_" + reader[4:-1] + "x")).status_code == 401
        assert client.get("/api/system/audit", headers=bearer(reader)).status_code == 403
        api_keys.revoke(conn, "reader")
        assert client.get(READ, headers=bearer(reader)).status_code == 401
        assert client.get(READ, headers=bearer(admin)).status_code == 200  # the kept answer, to a valid key


def test_an_expired_key_is_refused(make_app, orchestrator, tmp_path):
    client = make_app(orchestrator(days=2), REQUIRE_AUTH_FOR_READS=True).test_client()
    with closing(database.connect(tmp_path / "db.sqlite")) as conn:
        brief = api_keys.create(conn, "brief", "read", expires_days=1 / 86400)  # one second
    poll(lambda: client.get(READ, headers=bearer(brief)).status_code, lambda status: status == 401)


def test_no_key_at_all_leaves_everything_open_and_api_key_alone_is_admin(make_app, orchestrator):
    open_client = make_app(orchestrator(days=2)).test_client()
    assert open_client.post("/api/storyboard/project/create", json={"name": "open"}).status_code == 201
    assert open_client.get("/api/system/audit").get_json()[0]["key"] == "anonymous"
    keyed = make_app(orchestrator(days=2), API_KEY=API_KEY).test_client()
    assert keyed.post("/api/storyboard/project/create", json={"name": "x"}).status_code == 401
    assert keyed.get(READ).status_code == 200  # reads open without REQUIRE_AUTH_FOR_READS
    assert keyed.post("/api/storyboard/project/create", json={"name": "x"}, headers=bearer(API_KEY)).status_code == 201
