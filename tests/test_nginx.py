"""deploy/nginx/dashboard.conf in front of our gunicorn: slow clients, the event stream, the client's address
for the rate limit, nginx's own refusals in the app's JSON error shape; and TRUSTED_PROXY_HOPS itself.

The nginx tests run Debian's nginx (/usr/sbin/nginx, installed by `make test`) in the foreground with its own
prefix, temp folders and config under a temp folder, the shipped server block included with only its ports
replaced. Run as root (CI), the tests start nginx as nobody.
"""
from __future__ import annotations

import http.client
import json
import os
import pwd
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import tempfile
import threading
from collections import Counter
from contextlib import closing
from pathlib import Path
from types import SimpleNamespace

import pytest

from dashboard.web import hardening
from dashboard.config import ConfigError, load_config
from servers import PROJECT, Gunicorn, free_port, wait_for_port
from test_stream import EventStream

NGINX = Path("/usr/sbin/nginx")
SHIPPED = PROJECT / "deploy" / "nginx" / "dashboard.conf"
CREATE = "/api/storyboard/project/create"
RATE_LIMIT = 3
# Loopback addresses of their own, so nginx (and the app) see distinct clients, none of them nginx's 127.0.0.1.
CLIENT_A, CLIENT_B, CLIENT_C = "127.0.0.2", "127.0.0.3", "127.0.0.4"
ERROR_SHAPE = {"error", "status"}


def site_config(upstream_port: int, listen_port: int, **directives: str) -> str:
    """The shipped server block with gunicorn's port and nginx's listen address replaced, and any
    `directives` (name -> value) set to other values."""
    text = SHIPPED.read_text(encoding="utf-8")
    for pattern, value in ((r"^(\s*server) 127\.0\.0\.1:5000;$", rf"\1 127.0.0.1:{upstream_port};"),
                           (r"^(\s*listen) 80;$", rf"\1 127.0.0.1:{listen_port};"),
                           *((rf"^(\s*{name}) \S+;$", rf"\1 {value};") for name, value in directives.items())):
        text, count = re.subn(pattern, value, text, count=1, flags=re.M)
        assert count == 1, f"{SHIPPED.name} has no line matching {pattern!r}"
    return text


def http_request(port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
                 source: str = "127.0.0.1", timeout: float = 15) -> tuple[int, dict, bytes]:
    """One request to 127.0.0.1:`port` from the client address `source`: (status, headers, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout, source_address=(source, 0))
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.headers), response.read()
    finally:
        conn.close()


class Nginx:
    """nginx in the foreground, never as root, in front of `upstream_port`, with its prefix (config, temp
    folders, pid, output) in a folder of its own: under `under`, or, when the tests run as root, in a folder
    of nobody's in /tmp (nobody cannot reach pytest's root-only temp folders), removed by stop()."""

    def __init__(self, under: Path, upstream_port: int, **directives: str):
        self.port = free_port()
        self.as_user = pwd.getpwnam("nobody") if os.geteuid() == 0 else None
        self.workdir = Path(tempfile.mkdtemp(prefix="nginx-", dir=None if self.as_user else under))
        (self.workdir / "temp").mkdir()  # nginx makes the folders in it
        (self.workdir / "dashboard.conf").write_text(site_config(upstream_port, self.port, **directives),
                                                     encoding="utf-8")
        temp = {kind: self.workdir / "temp" / kind for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")}
        (self.workdir / "nginx.conf").write_text("\n".join([
            "daemon off;", "worker_processes 1;", f"pid {self.workdir / 'nginx.pid'};", "error_log stderr notice;",
            "events { worker_connections 512; }",
            "http {", "    access_log off;",
            *(f"    {kind}_temp_path {path};" for kind, path in temp.items()),
            f"    include {self.workdir / 'dashboard.conf'};", "}", ""]), encoding="utf-8")
        if self.as_user:
            for path in (self.workdir, *self.workdir.iterdir()):
                os.chown(path, self.as_user.pw_uid, self.as_user.pw_gid)
        self.output = b""
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Nginx":
        """Start nginx and wait until it accepts connections (its output in the failure otherwise)."""
        user = {"user": self.as_user.pw_uid, "group": self.as_user.pw_gid, "extra_groups": []} if self.as_user else {}
        # Its log to a file, not a pipe: a pipe nobody reads until stop() would block nginx once full.
        with open(self.workdir / "nginx.out", "wb") as out:
            self.proc = subprocess.Popen([str(NGINX), "-p", f"{self.workdir}/", "-c", str(self.workdir / "nginx.conf")],
                                         stdout=out, stderr=subprocess.STDOUT, **user)
        try:
            wait_for_port(self.port, self.proc, 15)
        except AssertionError as err:
            self.stop()
            raise AssertionError(f"{err}\n{self.output.decode(errors='replace')[-3000:]}") from None
        return self

    def stop(self) -> None:
        """SIGQUIT (graceful shutdown; SIGKILL if nginx is still there after 15 s), then remove its folder."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.output = (self.workdir / "nginx.out").read_bytes()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
                source: str = "127.0.0.1") -> tuple[int, dict, bytes]:
        """One request through nginx from the client address `source`: (status, headers, body)."""
        return http_request(self.port, method, path, body, headers, source)

    def raw(self, data: bytes, timeout: float = 15) -> bytes:
        """Send `data` as it is and read the answer until nginx closes the connection."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as sock:
            sock.sendall(data)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        return answer


@pytest.fixture(scope="module")
def app_server(_built, tmp_path_factory):
    """Our app under gunicorn with the proxy trusted (TRUSTED_PROXY_HOPS=1): one worker of 4 threads, so a
    few held requests would take them all."""
    if not NGINX.exists():
        pytest.skip(f"Debian's nginx is not installed ({NGINX} is absent; `make test` installs it)")
    workdir = tmp_path_factory.mktemp("nginx-app")
    root = workdir / "orchestrator"
    shutil.copytree(_built(None, 14), root)
    server = Gunicorn(root, workdir / "srv", to_file=True, GUNICORN_WORKERS="1", GUNICORN_THREADS="4",
                      TRUSTED_PROXY_HOPS="1", POST_RATE_LIMIT=str(RATE_LIMIT), STREAM_HEALTH_SECONDS="300",
                      STREAM_HEARTBEAT_SECONDS="1", STREAM_MAX_SECONDS="300")
    with server:
        yield server
    assert "Traceback" not in server.logs()


@pytest.fixture(scope="module")
def nginx(app_server, tmp_path_factory):
    """The shipped config as it is (ports aside), in front of app_server."""
    proxy = Nginx(tmp_path_factory.mktemp("nginx"), app_server.port).start()
    yield proxy
    proxy.stop()


def error_of(status: int, headers: dict, body: bytes) -> dict:
    """The JSON error answer, checked to have the app's shape and its status."""
    assert headers["Content-Type"].startswith("application/json"), (status, headers, body)
    error = json.loads(body)
    assert set(error) == ERROR_SHAPE and error["status"] == status and error["error"], error
    return error


def hold_slow_connections(port: int, sources: list[str], head: bytes,
                          stop: threading.Event) -> tuple[list, threading.Thread]:
    """A connection from each client address of `sources` that sends `head`, then one more byte of a header
    (or body) every 0.2 s until `stop` is set (or 60 s pass), never finishing its request."""
    socks = [socket.create_connection(("127.0.0.1", port), timeout=15, source_address=(source, 0))
             for source in sources]
    for sock in socks:
        sock.sendall(head)

    def trickle():
        for _ in range(300):
            if stop.wait(0.2):
                return
            for sock in socks:
                sock.sendall(b"a")

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    return socks, thread


def still_open(sock: socket.socket) -> bool:
    """The peer has not closed `sock` (no EOF and no error waiting to be read)."""
    sock.setblocking(False)
    try:
        return sock.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        sock.setblocking(True)


def test_slow_clients_do_not_keep_others_from_being_answered(app_server, tmp_path):
    """40 connections trickling their header (and 8 trickling a body) into nginx hold no gunicorn thread:
    the app's 4 threads still answer every normal request (with proxy_request_buffering off, the 8 bodies
    would hold all 4 and these requests would time out)."""
    # The whole header within 120 s instead of the shipped 10 s, so the slow connections are surely still
    # held while the requests below are answered, however slow the machine; nothing else differs.
    proxy = Nginx(tmp_path, app_server.port, client_header_timeout="120s").start()
    stop = threading.Event()
    slow_headers, header_thread = hold_slow_connections(
        proxy.port, ["127.0.0.1"] * 40, b"GET /api/status HTTP/1.1\r\nHost: dashboard\r\nX-Slow: ", stop)
    # From clients of their own, so the rate limit does not refuse them before their body is read.
    post_head = (f"POST {CREATE} HTTP/1.1\r\nHost: dashboard\r\nContent-Type: application/json\r\n"
                 "Content-Length: 1000\r\n\r\n")
    slow_bodies, body_thread = hold_slow_connections(proxy.port, [f"127.0.1.{i}" for i in range(1, 9)],
                                                     post_head.encode(), stop)
    try:
        answers = [proxy.request("GET", path)[0] for path in ("/api/status", "/api/agents/status", "/healthz") * 7]
        held = [still_open(sock) for sock in slow_headers + slow_bodies]
    finally:
        stop.set()
        header_thread.join()
        body_thread.join()
        for sock in slow_headers + slow_bodies:
            sock.close()
        proxy.stop()
    assert answers == [200] * 21
    assert held == [True] * 48  # all were still waiting while the 21 requests were answered


def test_events_arrive_through_nginx_as_they_are_sent(nginx):
    """/api/stream is not held back by nginx: the first events, and then each heartbeat (`: ping`, 8 bytes,
    every second here, alone: health events come every 300 s) arrive while the stream goes on. A proxy that
    buffered would hold the pings until it had a buffer's worth (even nginx's postpone_output, 1460 bytes)."""
    stream = EventStream(nginx.port, timeout=30)
    try:
        assert stream.response.status == 200
        assert stream.response.getheader("Content-Type").startswith("text/event-stream")
        seen: dict[str, list[str]] = {}
        for kind, data in stream.frames():
            seen.setdefault(kind, []).append(data)
            if {"retry", "training", "alert", "health"} <= set(seen) and len(seen.get("comment", [])) >= 3:
                break
        assert json.loads(seen["training"][0])["is_running"] is False
        assert 0 <= json.loads(seen["health"][0])["memory_percent"] <= 100
        assert seen["comment"][:3] == ["ping"] * 3 and len(seen["health"]) == 1
        assert not stream.response.isclosed()  # read while the stream still goes on
    finally:
        stream.close()


def rate_limit_rows(db: Path) -> dict[str, list[int]]:
    """The rate limiter's counts for the create endpoint: client address -> count per minute window."""
    with closing(sqlite3.connect(db)) as conn:
        rows = conn.execute("SELECT key, count FROM rate_limits WHERE key LIKE ? ORDER BY window", (f"%|{CREATE}",))
        counts: dict[str, list[int]] = {}
        for key, count in rows:
            counts.setdefault(key.split("|")[0], []).append(count)
    return counts


def test_the_rate_limit_counts_the_client_nginx_saw_whatever_it_claims(nginx, app_server):
    """Through nginx, POSTs are limited per client address as nginx saw it: a client that claims another
    address in X-Forwarded-For / X-Real-IP gets no fresh budget, and another client is not limited with it."""
    def post(source: str, claimed: str | None = None) -> int:
        spoof = {"X-Forwarded-For": claimed, "X-Real-IP": claimed} if claimed else {}
        status, _, _ = nginx.request("POST", CREATE, json.dumps({"name": "through nginx"}).encode(),
                                     {"Content-Type": "application/json", **spoof}, source=source)
        return status

    # Each claims a fresh address. 2 x limit + 1 POSTs: even if a new minute window starts in between,
    # one window gets more than the limit.
    from_a = [post(CLIENT_A, f"198.51.100.{i}") for i in range(2 * RATE_LIMIT + 1)]
    from_b = post(CLIENT_B)
    counts = rate_limit_rows(Path(app_server.env["DATABASE_PATH"]))
    # Counted as the two clients: neither as an address they claimed nor as nginx's own 127.0.0.1.
    assert {CLIENT_A, CLIENT_B} <= set(counts)
    assert not any(address == "127.0.0.1" or address.startswith("198.51.100.") for address in counts)
    assert sum(counts[CLIENT_A]) == len(from_a) and counts[CLIENT_B] == [1]
    admitted = sum(min(n, RATE_LIMIT) for n in counts[CLIENT_A])
    assert Counter(from_a) == {201: admitted, 429: len(from_a) - admitted}
    assert from_a.count(429) >= 1
    assert from_b == 201


@pytest.mark.parametrize("name, send, status", [
    ("oversized header", lambda n: n.request("GET", "/api/status", headers={"X-Big": "a" * 5000}), 431),
    ("oversized headers in all", lambda n: n.request("GET", "/api/status", headers={
        f"X-Big-{i}": "a" * 3000 for i in range(8)}), 431),
    ("long URL", lambda n: n.request("GET", "/api/metrics/quality?days=" + "7" * 5000), 414),
    ("no Host", lambda n: n.raw(b"GET /api/status HTTP/1.1\r\n\r\n"), 400),
    ("bad request line", lambda n: n.raw(b"GARBAGE\r\n\r\n"), 400),
])
def test_nginx_refusals_have_the_apps_json_error_shape(nginx, name, send, status):
    answer = send(nginx)
    if isinstance(answer, bytes):  # a raw answer: split it as http.client would
        head, _, body = answer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines[1:])
        answer = (int(lines[0].split()[1]), headers, body)
    assert answer[0] == status, answer
    error_of(*answer)


def test_an_oversized_body_through_nginx_is_the_apps_own_413(nginx, app_server):
    """nginx's client_max_body_size is the app's MAX_CONTENT_LENGTH: a body one byte over it gets from nginx
    the very answer the app gives; a body of exactly the limit reaches the app and is stored."""
    limit = load_config({})["MAX_CONTENT_LENGTH"]
    headers = {"Content-Type": "application/json"}
    over = b"x" * (limit + 1)
    through_nginx = nginx.request("POST", CREATE, over, headers, source=CLIENT_C)
    from_app = http_request(app_server.port, "POST", CREATE, over, headers, source=CLIENT_C)
    assert through_nginx[0] == from_app[0] == 413
    assert error_of(*through_nginx) == error_of(*from_app)
    at_limit = json.dumps({"name": "padded to the limit"}).encode().ljust(limit)
    status, _, body = nginx.request("POST", CREATE, at_limit, headers, source=CLIENT_C)
    assert status == 201 and json.loads(body)["name"] == "padded to the limit"


def test_a_server_that_is_down_is_a_json_502(tmp_path):
    if not NGINX.exists():
        pytest.skip(f"Debian's nginx is not installed ({NGINX} is absent; `make test` installs it)")
    proxy = Nginx(tmp_path, free_port()).start()  # nobody listens on the upstream port
    try:
        answer = proxy.request("GET", "/api/status")
    finally:
        proxy.stop()
    assert answer[0] == 502
    assert "not answering" in error_of(*answer)["error"]


def test_the_shipped_file_is_accepted_by_nginx_as_it_is(tmp_path):
    if not NGINX.exists():
        pytest.skip(f"Debian's nginx is not installed ({NGINX} is absent; `make test` installs it)")
    (tmp_path / "temp").mkdir()
    conf = tmp_path / "nginx.conf"
    conf.write_text(f"pid {tmp_path / 'nginx.pid'}; events {{}} http {{ client_body_temp_path {tmp_path / 'temp'}; "
                    f"proxy_temp_path {tmp_path / 'temp'}; include {SHIPPED}; }}\n", encoding="utf-8")
    check = subprocess.run([str(NGINX), "-t", "-p", f"{tmp_path}/", "-c", str(conf)], capture_output=True, text=True,
                           timeout=30)
    assert check.returncode == 0 and "test is successful" in check.stderr, check.stderr


def test_the_apps_own_errors_pass_through_nginx_unchanged(nginx, app_server):
    through = nginx.request("GET", "/api/agents/nope")
    direct = app_server.request("GET", "/api/agents/nope")
    assert through[0] == direct[0] == 404 and json.loads(through[2]) == json.loads(direct[2])


# --- TRUSTED_PROXY_HOPS itself, with Flask's test client (REMOTE_ADDR as a direct client's) ---

def post_from(client, forwarded_for: str):
    return client.post(CREATE, json={"name": "x"}, headers={"X-Forwarded-For": forwarded_for},
                       environ_base={"REMOTE_ADDR": "192.0.2.10"})


def test_by_default_a_claimed_address_is_ignored(make_app, orchestrator, monkeypatch):
    monkeypatch.setattr(hardening, "time", SimpleNamespace(time=lambda: 1_800_000_030.0))  # one rate window
    client = make_app(orchestrator(), POST_RATE_LIMIT=1).test_client()
    assert post_from(client, "198.51.100.1").status_code == 201
    assert post_from(client, "198.51.100.2").status_code == 429  # the same direct client, whatever it claims


def test_with_a_trusted_proxy_each_forwarded_client_has_its_own_budget(make_app, orchestrator, monkeypatch):
    monkeypatch.setattr(hardening, "time", SimpleNamespace(time=lambda: 1_800_000_030.0))
    client = make_app(orchestrator(), POST_RATE_LIMIT=1, TRUSTED_PROXY_HOPS=1).test_client()
    assert post_from(client, "198.51.100.1").status_code == 201
    assert post_from(client, "198.51.100.2").status_code == 201
    assert post_from(client, "198.51.100.1").status_code == 429
    # The proxy appends the address it saw: only the last entry counts, not what the client put before it.
    assert post_from(client, "198.51.100.9, 198.51.100.1").status_code == 429


@pytest.mark.parametrize("value", ["-1", "6", "one"])
def test_a_bad_trusted_proxy_hops_stops_the_start(value):
    with pytest.raises(ConfigError, match="TRUSTED_PROXY_HOPS"):
        load_config({"TRUSTED_PROXY_HOPS": value})
