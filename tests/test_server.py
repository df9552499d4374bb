"""Smoke test against a real gunicorn server: it starts, serves JSON, and hides tracebacks."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from conftest import PROJECT


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, deadline_seconds: float = 30.0) -> None:
    deadline = time.monotonic() + deadline_seconds
    while time.monotonic() < deadline:
        assert proc.poll() is None, "gunicorn exited early"
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError("gunicorn did not open its port")


def fetch(url: str) -> tuple[int, dict | list]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_gunicorn_serves_the_api(orchestrator, tmp_path):
    port = free_port()
    env = {**os.environ, "HOST": "127.0.0.1", "PORT": str(port), "ORCHESTRATOR_PATH": str(orchestrator()),
           "DATABASE_PATH": str(tmp_path / "db.sqlite"), "LOG_FILE": str(tmp_path / "server.log"),
           "GUNICORN_WORKERS": "2"}
    proc = subprocess.Popen([str(Path(sys.executable).with_name("gunicorn")), "--config", "gunicorn.conf.py",
                             "app:app"], cwd=PROJECT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_port(port, proc)
        base = f"http://127.0.0.1:{port}"
        for path in ("/api/dashboard/overview", "/api/agents/status", "/api/training/status",
                     "/api/metrics/quality", "/api/system/health"):
            status, body = fetch(base + path)
            assert status == 200 and body, path
        status, body = fetch(base + "/api/status")
        assert status == 200 and body["database"] == "ok"
        status, body = fetch(base + "/api/metrics/quality?days=999")
        assert status == 400 and "days" in body["error"]
        status, body = fetch(base + "/api/nope")
        assert status == 404 and body == {"error": "no such endpoint: /api/nope", "status": 404}
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=30)
    log = (tmp_path / "server.log").read_text(encoding="utf-8")
    assert "GET /api/agents/status 200" in log
    assert "Traceback" not in log and "Traceback" not in stderr.decode()
