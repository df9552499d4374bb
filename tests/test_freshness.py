"""Fresh on every worker: a write through the API shows in the next read on every gunicorn worker at once,
in local mode and through a cloud-mode proxy; an orchestrator file change shows within the cache's TTL.

Real gunicorn, real SQLite, a fresh TCP connection per request. Which worker answered is read from the
request log lines (one per answer, replayed or computed, with the worker's pid). The caches' TTLs are long
wherever a stale answer would show, and a write behind the API's back proves the answers were cached.
"""
from __future__ import annotations

import json
import os
import shlex
import signal
import sqlite3
import threading
import uuid
from collections import Counter
from contextlib import closing
from pathlib import Path

import psutil

from dashboard.cloud import cache as cloud_cache
import database
from dashboard.store import events
from dashboard.store.generations import Generations
from dashboard.web import hardening
from dashboard.store import storyboard_store
from dashboard.training import wrapper as training_wrapper
from conftest import poll
from servers import Gunicorn
from dashboard.web.validation import PROJECTS_PAGE

LIST = "/api/storyboard/projects"
CREATE = "/api/storyboard/project/create"
STATUS = "/api/training/status"
KEY = "freshness-key-5c1d9e7a3b2f4a60"
# At most two connections per worker: a burst of concurrent requests reaches every worker (test_production).
SPREAD = {"GUNICORN_CMD_ARGS": "--worker-connections 2"}
SLEEPER = "import time; print('ready', flush=True); time.sleep(120)"
# Settings only a test gives (a cloud proxy's, keys): not inherited from the environment that runs the tests.
INHERITED = ("CLOUD_", "API_KEY", "REQUIRE_AUTH", "ENVIRONMENT")
NO_PROXY = {"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}


def answers_per_worker(server: Gunicorn, path: str) -> Counter:
    """How many 200 answers to GET `path` each worker (pid) has logged."""
    needle = f"GET {path} 200 "
    text = server.log_path.read_text() if server.log_path.exists() else ""  # no worker has started yet
    return Counter(line.split("[")[1].split("]")[0] for line in text.splitlines() if needle in line)


class Reader:
    """GETs of one path over fresh connections, in concurrent bursts, each answer checked; counts what it sent,
    so the log tells which workers answered since any point."""

    def __init__(self, server: Gunicorn, path: str, query: str = "", log_path: str | None = None):
        self.server, self.url, self.log_path = server, path + query, log_path or path
        self.sent = 0
        self.answers: list[object] = []

    def logged(self) -> Counter:
        """Per worker, the answers logged so far, once every request sent has its line."""
        return poll(lambda: answers_per_worker(self.server, self.log_path),
                    lambda counts: sum(counts.values()) >= self.sent)[-1]

    def burst(self, size: int = 8) -> list[object]:
        bodies: list[object] = []

        def one():
            status, body = self.server.get_json(self.url)
            assert status == 200, body
            bodies.append(body)

        threads = [threading.Thread(target=one) for _ in range(size)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(bodies) == size, "a request failed"
        self.sent += size
        self.answers += bodies
        return bodies

    def on_every_worker(self, workers: int, check, at_least: int = 40) -> list[object]:
        """Read in bursts until every one of `workers` has answered since now and `at_least` answers came;
        `check` holds for each answer. Returns the answers."""
        before, first = self.logged(), len(self.answers)

        def round_():
            for body in self.burst():
                assert check(body), body
            since = self.logged() - before
            return len(since), len(self.answers) - first

        poll(round_, lambda seen: seen[0] == workers and seen[1] >= at_least, interval=0)
        return self.answers[first:]


def names(projects) -> set[str]:
    return {p["name"] for p in projects}


def insert_behind_the_api(db: Path, name: str) -> None:
    """A project written straight into SQLite: no POST, so no cache is told."""
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("INSERT INTO storyboard_projects (id, name, description, created_at, updated_at)"
                     " VALUES (?, ?, NULL, '2030-01-01T00:00:00Z', '2030-01-01T00:00:00Z')", (uuid.uuid4().hex, name))


# --- in-process: the generation itself ---

def test_a_generation_moves_only_for_writes_under_its_prefix(tmp_path):
    db = tmp_path / "db.sqlite"
    database.migrate(db)
    gens = Generations(db)
    assert gens.stamp(LIST) == gens.stamp("/api/training/status") == 0
    with closing(database.connect(db)) as writer:
        database.bump_generations(writer, ("/api/storyboard/",))
        assert gens.stamp(LIST) == 1 and gens.stamp("/api/training/status") == 0
        with database.transaction(writer):  # another commit: data_version moves, the counters do not
            writer.execute("INSERT INTO readiness_probe (id, checked_at) VALUES (1, 'now')")
        assert gens.stamp(LIST) == 1
        database.bump_generations(writer, ("/",))  # a POST of no known area: everything
        assert gens.stamp(LIST) == 2 and gens.stamp("/healthz") == 1
    missing = Generations(tmp_path / "no" / "such" / "dir" / "db.sqlite")
    assert missing.stamp(LIST) is None  # unreadable: the caches fall back to their TTL


def test_the_providers_version_moves_for_what_it_reads_and_not_for_storyboard_or_rate_limit_writes(tmp_path):
    db = tmp_path / "db.sqlite"
    database.migrate(db)
    gens = Generations(db)
    first = gens.reads_version()
    with closing(database.connect(db)) as writer:
        storyboard_store.create_project(writer, "p", None, [])
        hardening.hit(writer, "127.0.0.1", 1)
        database.bump_generations(writer, ("/api/storyboard/",))
        # the counters were re-read after these commits (the storyboard's moved), the provider's did not
        assert gens.stamp("/api/storyboard/projects") == 1 and gens.reads_version() == first
        events.record_event(writer, "ingest_warning", "x", source="ingester")
        after_event = gens.reads_version()
        assert after_event != first
        writer.execute("INSERT INTO training_sessions (start_time, status, origin, command)"
                       " VALUES ('2030-01-01T00:00:00Z', 'running', 'dashboard', 'x')")
        session_id = writer.execute("SELECT MAX(id) FROM training_sessions").fetchone()[0]
        after_insert = gens.reads_version()
        assert training_wrapper.apply_outcome(writer, session_id, {"status": "completed", "exit_code": 0})
        assert gens.reads_version() != after_insert  # a run's end, written by the wrapper process


def test_every_serving_thread_reads_the_same_version_and_sees_a_commit(tmp_path):
    """Each thread reads the counters on its own connection (no lock around SQLite): the threads of a worker
    still agree on the version, so a kept derivation serves them all, and each sees the next commit."""
    db = tmp_path / "db.sqlite"
    database.migrate(db)
    gens = Generations(db)
    barrier = threading.Barrier(8)

    def versions() -> list:
        seen = []
        for _ in range(2):
            barrier.wait()  # all threads read, then the main thread commits, then all read again
            seen.append((gens.reads_version(), gens.stamp(LIST)))
            barrier.wait()
        return seen

    results: list = []
    threads = [threading.Thread(target=lambda: results.append(versions())) for _ in range(7)]
    for thread in threads:
        thread.start()
    barrier.wait()
    before = (gens.reads_version(), gens.stamp(LIST))
    barrier.wait()
    with closing(database.connect(db)) as writer:
        events.record_event(writer, "ingest_warning", "x", source="ingester")
        database.bump_generations(writer, ("/api/storyboard/",))
    barrier.wait()
    after = (gens.reads_version(), gens.stamp(LIST))
    barrier.wait()
    for thread in threads:
        thread.join()
    assert before[0] is not None and after[0] != before[0] and after[1] == before[1] + 1
    assert results == [[before, after]] * 7


def test_an_upstream_result_is_kept_only_while_its_generation_stands():
    generation, calls = {"now": 1}, []
    cache = cloud_cache.TTLCache(3600, generation=lambda key: generation["now"])

    def load():
        calls.append(1)
        return {"n": len(calls)}

    assert cache.get_or_load(LIST, load) == {"n": 1}
    assert cache.get_or_load(LIST, load) == {"n": 1}  # within the TTL, same generation: cached
    generation["now"] = 2
    assert cache.get_or_load(LIST, load) == {"n": 2} and len(calls) == 2
    generation["now"] = None  # unreadable: the TTL alone
    assert cache.get_or_load(LIST, load) == {"n": 3}
    assert cache.get_or_load(LIST, load) == {"n": 3}


def test_a_write_and_the_end_of_the_answers_it_changes_are_one_commit(make_app, orchestrator):
    """No moment in which another worker sees the new project but still replays its old list: the project
    and its cache generation are committed together, in one write transaction."""
    app = make_app(orchestrator(), RESPONSE_CACHE_SECONDS=60)
    client = app.test_client()
    gens = Generations(app.config["DATABASE_PATH"])
    before = gens.stamp(LIST)
    statements: list[str] = []
    with app.app_context():
        conn = database.get_db()  # this thread's connection: the one the next request of this thread uses
        conn.set_trace_callback(statements.append)
    try:
        assert client.post(CREATE, json={"name": "together"}).status_code == 201
    finally:
        conn.set_trace_callback(None)
    (project,) = [i for i, sql in enumerate(statements) if "INSERT INTO storyboard_projects" in sql]
    commits = [i for i, sql in enumerate(statements) if sql.strip().upper() == "COMMIT" and i > project]
    bumps = [i for i, sql in enumerate(statements) if "cache_generations" in sql]
    # the rate limit's count is a commit of its own before it; after the project, one commit holds the
    # project, its generation and the audit's row
    assert len(commits) == 1 and "INTO events" in " ".join(statements[project:commits[0]])  # the audit row
    ours = [i for i in bumps if i < commits[0]]
    assert ours and all(project < i for i in ours)
    assert gens.stamp(LIST) == before + 1


def test_without_a_readable_generation_the_cache_falls_back_to_its_ttl(make_app, orchestrator, caplog):
    app = make_app(orchestrator(), RESPONSE_CACHE_SECONDS=60)
    client = app.test_client()
    with closing(sqlite3.connect(app.config["DATABASE_PATH"])) as conn:
        conn.execute("DROP TABLE cache_generations")  # as if the counters could not be read
    first = client.get(LIST)
    assert first.status_code == 200 and first.get_json() == []
    assert client.get(LIST).get_json() == []  # served again
    created = client.post(CREATE, json={"name": "no generation"})
    assert created.status_code == 201  # the write stands even though the bump failed
    assert "cache generation not bumped" in caplog.text
    assert names(client.get(LIST).get_json()) == {"no generation"}  # this process forgot its own answers


# --- real servers ---

def test_a_created_project_shows_on_every_worker_at_once(orchestrator, tmp_path):
    srv = tmp_path / "srv"
    with Gunicorn(orchestrator(), srv, unset=INHERITED, GUNICORN_WORKERS="4", GUNICORN_THREADS="4",
                  RESPONSE_CACHE_SECONDS="60", **SPREAD) as server:
        reader = Reader(server, LIST)
        reader.on_every_worker(4, lambda body: body == [])  # every worker holds the empty list
        insert_behind_the_api(srv / "db.sqlite", "behind the API")
        # Not told, every worker replays its cached list: a stale cache shows here.
        reader.on_every_worker(4, lambda body: body == [])
        status, created = server.post_json(CREATE, {"name": "made through the API"})
        assert status == 201, created
        answers = reader.on_every_worker(4, lambda body: names(body) == {"made through the API", "behind the API"})
    assert len(answers) >= 40


def upstream_and_proxy(root: Path, tmp_path: Path) -> tuple[Gunicorn, Gunicorn]:
    upstream = Gunicorn(root, tmp_path / "upstream", unset=INHERITED, API_KEY=KEY, GUNICORN_WORKERS="2",
                        GUNICORN_THREADS="4", RESPONSE_CACHE_SECONDS="60", **SPREAD, **NO_PROXY)
    proxy = Gunicorn(tmp_path / "absent", tmp_path / "proxy", unset=INHERITED, ENVIRONMENT="cloud",
                     CLOUD_API_URL=upstream.base, CLOUD_API_KEY=KEY, CLOUD_ALLOW_INSECURE_HTTP="true",
                     CLOUD_ALLOW_ANONYMOUS_WRITES="true",
                     CLOUD_CACHE_SECONDS="600", RESPONSE_CACHE_SECONDS="60", GUNICORN_WORKERS="2",
                     GUNICORN_THREADS="4", **SPREAD, **NO_PROXY)
    return upstream, proxy


def test_a_project_created_through_a_cloud_proxy_shows_on_every_worker_at_once(orchestrator, tmp_path):
    upstream, proxy = upstream_and_proxy(orchestrator(), tmp_path)
    with upstream, proxy:
        # First the upstream's own workers, asked what the proxy asks them (before the proxy asks anything,
        # so each of the upstream's log lines is one of these reads), then the proxy's workers.
        direct = Reader(upstream, LIST, f"?limit={PROJECTS_PAGE}&offset=0")
        direct.on_every_worker(2, lambda body: body == [])
        through_proxy = Reader(proxy, LIST)
        through_proxy.on_every_worker(2, lambda body: body == [])
        insert_behind_the_api(tmp_path / "upstream" / "db.sqlite", "behind the API")
        through_proxy.on_every_worker(2, lambda body: body == [])  # cached on both sides: stale by design
        status, created = proxy.post_json(CREATE, {"name": "made through the proxy"})
        assert status == 201, created
        everything = {"made through the proxy", "behind the API"}
        answers = through_proxy.on_every_worker(2, lambda body: names(body) == everything)
        for _ in range(5):  # and the upstream's workers agree (their log now has the proxy's reads too)
            assert all(names(body) == everything for body in direct.burst())
    assert len(answers) >= 40


def kill_runs(runs_dir: Path) -> None:
    """Kill the process groups of every run the server started (wrapper and command), checking create times."""
    for info_file in (list(runs_dir.glob("*/child.json")) + list(runs_dir.glob("*/wrapper.json"))
                      if runs_dir.is_dir() else []):
        try:
            info = json.loads(info_file.read_text())
            proc = psutil.Process(info["pid"])
            if info.get("create_time") is None or abs(proc.create_time() - info["create_time"]) < 1:
                os.killpg(info.get("pgid", info["pid"]), signal.SIGKILL)
        except (OSError, ValueError, KeyError, psutil.Error):
            pass


def run_processes(runs_dir: Path) -> list[int]:
    """The pids of the runs' wrappers and commands that are still alive."""
    alive = []
    for info_file in list(runs_dir.glob("*/child.json")) + list(runs_dir.glob("*/wrapper.json")):
        try:
            pid = json.loads(info_file.read_text())["pid"]
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except (OSError, ValueError, KeyError, psutil.Error):
            pass
    return alive


def test_a_started_run_shows_as_running_on_every_worker_at_once(orchestrator, tmp_path):
    srv = tmp_path / "srv"
    server = Gunicorn(orchestrator(), srv, unset=INHERITED, new_session=True, GUNICORN_WORKERS="4",
                      GUNICORN_THREADS="4", RESPONSE_CACHE_SECONDS="60",
                      TRAINING_COMMAND=f"python -c {shlex.quote(SLEEPER)}",
                      TRAINING_STOP_GRACE_SECONDS="3", **SPREAD)
    try:
        server.start()
        reader = Reader(server, STATUS)
        reader.on_every_worker(4, lambda body: body["is_running"] is False)
        status, started = server.post_json("/api/training/start", {})
        assert status == 202, started
        answers = reader.on_every_worker(4, lambda body: body["is_running"] is True
                                         and body["session_id"] == started["session_id"])
        assert len(answers) >= 40
        status, stopped = server.post_json("/api/training/stop", {}, timeout=30)
        assert status in (200, 202), stopped
        if status == 200:  # ended before the answer (a sleeper ends on SIGTERM): every worker shows it at once
            reader.on_every_worker(4, lambda body: body["is_running"] is False, at_least=8)
        poll(lambda: run_processes(srv / "runs"), lambda pids: pids == [])
    finally:
        kill_runs(srv / "runs")
        server.stop()


def test_an_orchestrator_file_change_shows_within_the_ttl(orchestrator, tmp_path):
    root = orchestrator()
    with Gunicorn(root, tmp_path / "srv", unset=INHERITED, RESPONSE_CACHE_SECONDS="1") as server:
        status, before = server.get_json("/api/dashboard/overview")
        assert status == 200 and before["agents_trained"] != 99
        path = root / "holistic_training_result.json"
        result = json.loads(path.read_text())
        result["agents_trained"] = 99
        path.write_text(json.dumps(result))
        poll(lambda: server.get_json("/api/dashboard/overview")[1], lambda body: body["agents_trained"] == 99)
