"""One instance per state folder, with real gunicorn servers on 127.0.0.1 and real files.

The state folder is the folder of DATABASE_PATH: the database, its locks, the Prometheus folder and
gunicorn's control socket. A second instance of another identity on it is refused; a restart of the same
instance (USR2 re-exec, a start while the predecessor stops, a start after a stop) is not; two instances
with folders of their own keep their events, counters and control sockets apart.
"""
from __future__ import annotations

import fcntl
import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import PROJECT, poll
from servers import Gunicorn, free_port

INHERITED = ("CLOUD_", "API_KEY", "REQUIRE_AUTH", "ENVIRONMENT", "PROMETHEUS_", "XDG_RUNTIME_DIR")
KEY = "instances-test-key-0123456789"


def local(root: Path, workdir: Path, state: Path | None = None, **env: str) -> Gunicorn:
    """A 1-worker local-mode gunicorn, its output in workdir, its state in `state` (default: workdir)."""
    state = state or workdir
    return Gunicorn(root, workdir, unset=INHERITED, to_file=True, GUNICORN_WORKERS="1", INGEST_SECONDS="0",
                    DATABASE_PATH=str(state / "db.sqlite"), PROMETHEUS_MULTIPROC_DIR="", **env)


def proxy(upstream_port: int, workdir: Path, state: Path | None = None) -> Gunicorn:
    """A 1-worker cloud-mode gunicorn in front of 127.0.0.1:upstream_port (no retries past one deadline)."""
    return local(workdir / "absent", workdir, state, ENVIRONMENT="cloud", CLOUD_API_KEY=KEY,
                 CLOUD_API_URL=f"http://127.0.0.1:{upstream_port}", CLOUD_ALLOW_INSECURE_HTTP="true",
                 CLOUD_BREAKER_FAILURES="0", CLOUD_TIMEOUT_SECONDS="2", CLOUD_CACHE_SECONDS="0",
                 NO_PROXY="127.0.0.1", no_proxy="127.0.0.1")


def record(state: Path) -> dict:
    """The instance lock's record: pid, descriptor, identity."""
    return json.loads((state / "instance.lock").read_text())


def lock_is_free(state: Path) -> bool:
    """Whether nobody holds the state folder's lock now."""
    with open(state / "instance.lock") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(handle, fcntl.LOCK_UN)
        return True


def refused(server: Gunicorn, seconds: float = 60) -> str:
    """Wait for a launched server to exit on its own; fail unless non-zero; return its output."""
    returncode = server.proc.wait(timeout=seconds)
    output = server.output.read_text(errors="replace")
    assert returncode != 0, output[-2000:]
    return output


def api_errors(state: Path) -> list[str]:
    """The messages of the api_error events in the state folder's database."""
    with sqlite3.connect(state / "db.sqlite") as conn:
        return [row[0] for row in conn.execute("SELECT message FROM events WHERE event_type = 'api_error'")]


def counted(server: Gunicorn, status: str, endpoint: str = "") -> float:
    """dashboard_http_requests_total of `status` (of `endpoint`, or summed over all) from the server's /metrics."""
    _, _, body = server.request("GET", "/metrics")
    lines = [line for line in body.decode().splitlines()
             if line.startswith("dashboard_http_requests_total{") and f'status="{status}"' in line
             and f'endpoint="{endpoint}"' in (line if endpoint else f'endpoint=""')]
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines)


def test_a_second_instance_on_the_same_state_folder_is_refused(orchestrator, tmp_path):
    state = tmp_path / "state"
    with local(orchestrator(), state) as first:
        assert first.request("GET", "/api/status")[0] == 200
        metric_files = poll(lambda: sorted((state / "prometheus").glob("*.db")), bool)[-1]
        # The user's mistake: a cloud proxy in front of the first, on the first's DATABASE_PATH.
        second = proxy(first.port, tmp_path / "second", state=state).launch()
        output = refused(second)
        assert f"DATABASE_PATH {state / 'db.sqlite'}" in output
        assert f"pid {first.proc.pid}" in output and "ENVIRONMENT=local" in output
        # The refused start left the first instance's state alone: it still serves and counts.
        assert all(path.exists() for path in metric_files)
        assert (state / "gunicorn.ctl").exists()
        assert first.request("GET", "/api/status")[0] == 200 and counted(first, "200", "/api/status") == 2
        # The same under `python app.py`: the single process claims the folder itself.
        env = {**second.env, "PORT": str(free_port())}
        alone = subprocess.run([sys.executable, "app.py"], cwd=PROJECT, env=env, capture_output=True, text=True,
                               timeout=60)
        assert alone.returncode != 0
        assert "DATABASE_PATH" in alone.stderr and f"pid {first.proc.pid}" in alone.stderr
    assert first.proc.returncode == 0


def test_a_restart_of_the_same_instance_goes_on(orchestrator, tmp_path):
    root, state = orchestrator(days=0), tmp_path / "state"
    first = local(root, state).start()
    try:
        assert first.request("GET", "/api/status")[0] == 200
        # A start of the same instance while it still runs (a restart whose predecessor is stopping).
        successor = local(root, tmp_path / "successor", state=state).start()
        try:
            assert successor.request("GET", "/api/status")[0] == 200
            assert record(state)["pid"] == first.proc.pid
            assert "taken over when it stops" in successor.logs()
            assert first.stop() == 0
            poll(lambda: record(state)["pid"], lambda pid: pid == successor.proc.pid)
        finally:
            successor.stop()
        # A start after a stop: the lock is free again.
        assert lock_is_free(state)
        with local(root, state) as again:
            assert record(state)["pid"] == again.proc.pid
    finally:
        first.stop()


def test_usr2_reexec_inherits_the_lock(orchestrator, tmp_path):
    state = tmp_path / "state"
    old = local(orchestrator(days=0), state).start()
    new_pid = None
    try:
        old.proc.send_signal(signal.SIGUSR2)
        new_pid = poll(lambda: record(state)["pid"], lambda pid: pid != old.proc.pid)[-1]
        assert "refusing" not in old.logs()
        assert old.stop() == 0  # the old master goes; its re-executed child is promoted and keeps the lock
        assert not lock_is_free(state)
        poll(lambda: old.request("GET", "/api/status")[0], lambda status: status == 200)
        intruder = proxy(old.port, tmp_path / "intruder", state=state).launch()
        assert f"pid {new_pid}" in refused(intruder)
    finally:
        if new_pid is not None:
            os.kill(new_pid, signal.SIGTERM)
            poll(lambda: lock_is_free(state), bool)


def test_instances_with_their_own_folders_keep_their_state_apart(orchestrator, tmp_path):
    upstream = local(orchestrator(), tmp_path / "upstream", API_KEY=KEY).start()
    dead = free_port()  # the proxy's upstream: nothing listens there
    front = proxy(dead, tmp_path / "proxy").start()
    try:
        assert upstream.request("GET", "/api/status")[0] == 200
        status, _, body = front.request("GET", "/api/agents/status")
        assert status == 502, body
        poll(lambda: api_errors(tmp_path / "proxy"), lambda found: any("answered 502" in m for m in found))
        assert api_errors(tmp_path / "upstream") == []
        assert counted(front, "502") == 1 and counted(upstream, "502") == 0
        assert counted(upstream, "200", "/api/status") == 1 and counted(front, "200", "/api/status") == 0
        sockets = [tmp_path / name / "gunicorn.ctl" for name in ("upstream", "proxy")]
        assert all(path.is_socket() for path in sockets)
        assert front.stop() == 0
        # The proxy's stop removed its own socket only; the upstream's socket, metrics and counters stay.
        assert not sockets[1].exists() and sockets[0].is_socket()
        assert any((tmp_path / "upstream" / "prometheus").glob("*.db"))
        assert upstream.request("GET", "/api/status")[0] == 200
        assert counted(upstream, "200", "/api/status") == 2
    finally:
        front.stop()
        upstream.stop()


def test_the_control_socket_is_the_instances_own(orchestrator, tmp_path):
    with local(orchestrator(days=0), tmp_path / "srv") as server:
        socket_path = tmp_path / "srv" / "gunicorn.ctl"
        poll(lambda: socket_path.is_socket(), bool)
        shown = subprocess.run([str(Path(sys.executable).with_name("gunicornc")), "-s", str(socket_path), "-j",
                                "-c", "show workers"], capture_output=True, text=True, timeout=30)
        assert shown.returncode == 0, shown.stderr
        assert str(server.proc.pid) in shown.stdout or "workers" in shown.stdout
