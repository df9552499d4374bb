"""Real servers for tests: our app under gunicorn on 127.0.0.1, started and stopped cleanly."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
GUNICORN = Path(sys.executable).with_name("gunicorn")


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, deadline_seconds: float = 30.0) -> None:
    """Return once `port` accepts connections; fail if `proc` exits or the deadline passes."""
    deadline = time.monotonic() + deadline_seconds
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"server exited early with {proc.returncode}"
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"server did not open port {port}")


class Gunicorn:
    """`gunicorn --config gunicorn.conf.py [ARGS] app:app` over `root`, with its files in `workdir`.

    `unset`: prefixes of inherited environment variables to leave out (settings only `env` may give).
    `new_session`: the server leads its own process group, and stop() signals the whole group.
    `to_file`: stdout and stderr go to `output` (workdir/server.out), not to a pipe. The app logs every
    request to the console too, and a pipe nobody reads until stop() blocks a busy server once it is full.
    """

    def __init__(self, root: Path, workdir: Path, port: int | None = None, *, args: tuple[str, ...] = (),
                 app: str = "app:app", unset: tuple[str, ...] = (), new_session: bool = False, to_file: bool = False,
                 **env: str):
        workdir.mkdir(parents=True, exist_ok=True)
        self.argv = [str(GUNICORN), "--config", "gunicorn.conf.py", *args, app]
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "server.log"
        self.output = workdir / "server.out"
        self.new_session, self.to_file = new_session, to_file
        inherited = {k: v for k, v in os.environ.items() if not k.startswith(unset)}
        self.env = {**inherited, "ENVIRONMENT": "local", "HOST": "127.0.0.1", "PORT": str(self.port),
                    "ORCHESTRATOR_PATH": str(root), "DATABASE_PATH": str(workdir / "db.sqlite"),
                    "LOG_FILE": str(self.log_path), "TRAINING_RUNS_DIR": str(workdir / "runs"),
                    "GUNICORN_WORKERS": "2", "HEALTH_SAMPLE_SECONDS": "0",
                    "PROMETHEUS_MULTIPROC_DIR": str(workdir / "prometheus"),
                    **{k: str(v) for k, v in env.items()}}
        self.proc: subprocess.Popen | None = None
        self.stderr = b""

    def start(self) -> "Gunicorn":
        """Start the server and wait until it accepts connections."""
        return self.launch().wait_ready()

    def launch(self) -> "Gunicorn":
        """Start the server without waiting for it (a server that must fail to start, or several at once)."""
        if not self.to_file:
            self.proc = subprocess.Popen(self.argv, cwd=PROJECT, env=self.env, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.PIPE, start_new_session=self.new_session)
            return self
        with open(self.output, "wb") as out:
            self.proc = subprocess.Popen(self.argv, cwd=PROJECT, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=self.new_session)
        return self

    def wait_ready(self, deadline_seconds: float = 30.0) -> "Gunicorn":
        """Return once the launched server accepts connections; fail with its output if it does not."""
        try:
            wait_for_port(self.port, self.proc, deadline_seconds)
        except AssertionError as err:
            if not self.to_file:
                raise
            raise AssertionError(f"{err}\n{self.output.read_text(errors='replace')[-3000:]}") from None
        return self

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, wait for a clean exit (SIGKILL past `timeout`); return the exit code."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self._signal(signal.SIGTERM)
        try:
            _, stderr = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._signal(signal.SIGKILL)
            _, stderr = self.proc.communicate()
        self.stderr = self.output.read_bytes() if self.to_file else stderr
        return self.proc.returncode

    def _signal(self, signum: int) -> None:
        """Send `signum` to the server, or to its whole process group (as Ctrl-C or a supervisor would)."""
        if not self.new_session:
            self.proc.send_signal(signum)
            return
        try:
            os.killpg(self.proc.pid, signum)
        except ProcessLookupError:
            pass

    def logs(self) -> str:
        """The app's log file and (with `to_file`) the server's output, as text."""
        paths = (self.log_path, self.output) if self.to_file else (self.log_path,)
        return "".join(path.read_text(encoding="utf-8", errors="replace") for path in paths if path.exists())

    def __enter__(self) -> "Gunicorn":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def request(self, method: str, path: str, body: dict | None = None, headers: dict | None = None,
                timeout: float = 15) -> tuple[int, dict, bytes]:
        """One HTTP request; returns (status, headers, raw body) without raising on 4xx/5xx."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base + path, data=data, method=method, headers={
            **({"Content-Type": "application/json"} if data is not None else {}), **(headers or {})})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as err:
            with err:
                return err.code, dict(err.headers), err.read()

    def get_json(self, path: str, **kwargs) -> tuple[int, object]:
        """GET `path`; (status, parsed JSON body)."""
        status, _, body = self.request("GET", path, **kwargs)
        return status, json.loads(body)

    def post_json(self, path: str, body: dict, **kwargs) -> tuple[int, object]:
        """POST a JSON body; (status, parsed JSON body)."""
        status, _, raw = self.request("POST", path, body, **kwargs)
        return status, json.loads(raw)
