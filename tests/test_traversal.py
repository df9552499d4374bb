"""Path traversal: no path parameter, however encoded, reaches a file or row outside what it names."""
from __future__ import annotations

import json
import re
import socket
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

import pytest

from conftest import poll
from servers import Gunicorn

CANARY = "CANARY-4f1d9c-outside-the-orchestrator"
SECRETS = (CANARY, "root:x:0:0")  # the canary files' text and /etc/passwd's first line
PAYLOADS = [
    # dot segments, raw, percent-encoded (%2e ".", %2f "/") and double-encoded (%25 "%")
    "..", "../", "../../../../../../etc/passwd", "agent_1/../../../etc/passwd", "....//....//etc/passwd",
    "..;/..;/etc/passwd", "%2e%2e", "%2e%2e%2f%2e%2e%2fetc%2fpasswd", "..%2f..%2f..%2fetc%2fpasswd",
    ".%2e/.%2e/etc/passwd", "%252e%252e%252fetc%252fpasswd", "..%252f..%252fetc%252fpasswd", "%25%32%65%25%32%65",
    # backslashes
    "..\\..\\etc\\passwd", "..%5c..%5cetc%5cpasswd", "%5c%5c..%5cetc%5cpasswd",
    # absolute paths
    "/etc/passwd", "%2fetc%2fpasswd", "//etc/passwd", "file:%2f%2f%2fetc%2fpasswd", "C:%5cWindows%5cwin.ini", "~root",
    # NUL
    "%00", "agent_1%00", "agent_1%00.py", "..%00/etc/passwd", "%2e%2e%00%2f",
    # overlong UTF-8, Unicode lookalikes of ".", "/" and digits (U+0661: an Arabic-Indic 1; see lookalike())
    "%c0%ae%c0%ae%c0%af", "%e0%80%ae%e0%80%ae%2f", "\u2024\u2024\u2215etc\u2215passwd", "\uff0e\uff0e\uff0fetc",
    "agent_\uff11", "%u002e%u002e%u2215", "\u0661",
    # very long
    "a" * 65, "a" * 3000, "../" * 900,
    # the links planted in the orchestrator folder
    "etc", "canary", "etc%2fpasswd", "agent_97",
    # SQL
    "' OR '1'='1", "1 OR 1=1", "1;DROP TABLE storyboard_projects",
]
# Bytes gunicorn itself refuses in a request line (400 from gunicorn, before the app).
ARABIC_INDIC = str.maketrans("0123456789", "\u0660\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668\u0669")
MALFORMED = [b"\x00", b"..\x00/etc/passwd", "\u2024\u2024/".encode(), b"\xc0\xae\xc0\xae/", b"a b/../../etc/passwd"]


@pytest.fixture
def planted(orchestrator, tmp_path) -> Path:
    """An orchestrator folder whose links point outside it: to /etc and to canary files."""
    root = orchestrator()
    outside = tmp_path / "outside"
    outside.mkdir()
    # Stamped now: newer than all the history, so a followed link would show in every recent window.
    now = datetime.now()
    (outside / "canary.py").write_text(f'"""{CANARY}"""\n')
    (outside / "canary.log").write_text(f"{now:%Y-%m-%d %H:%M:%S},000 - HolisticTrainer - ERROR - {CANARY}\n")
    metrics = json.loads((root / "logs" / "training_metrics.json").read_text())
    metrics["canary_metric"] = [{"timestamp": now.isoformat(timespec="seconds"), "score": 1.0, "agent": CANARY}]
    (outside / "metrics.json").write_text(json.dumps(metrics))
    (root / "logs" / "training_metrics.json").unlink()
    (root / "logs" / "training_metrics.json").symlink_to(outside / "metrics.json")
    config_path = root / "training" / "config.json"
    config = json.loads(config_path.read_text())
    config["training"]["agent_training"]["agent_98"] = {"enabled": True, "description": "module links outside"}
    config_path.write_text(json.dumps(config))
    (root / "agents" / "agent_98_canary.py").symlink_to(outside / "canary.py")
    (root / "agents" / "agent_97_passwd.py").symlink_to("/etc/passwd")
    (root / "logs" / "canary.log").symlink_to(outside / "canary.log")
    for folder in (root, root / "agents", root / "logs"):
        (folder / "etc").symlink_to("/etc")
        (folder / "canary").symlink_to(outside / "canary.py")
    return root


def targets(app) -> list[tuple[str, str, set[int]]]:
    """(method, path template, allowed statuses) for every route with a path parameter, GET and POST."""
    found = []
    for rule in app.url_map.iter_rules():
        if rule.arguments:
            for method in ("GET", "POST"):
                found.append((method, re.sub(r"<[^>]+>", "{}", rule.rule),
                              {400, 403, 404} | (set() if method in rule.methods else {405})))
    assert {t for _, t, _ in found} >= {"/api/agents/{}", "/api/metrics/history/{}", "/api/storyboard/project/{}",
                                        "/api/training/session/{}", "/static/{}"}
    return found


def problems(what: str, path: str, status: int, allowed: set[int], body: bytes, headers: str) -> list[str]:
    """What is wrong with one answer: a status outside `allowed`, a non-JSON /api error, outside text."""
    found = [] if status in allowed else [f"{what}: status {status}"]
    if path.startswith("/api/"):
        try:
            error = json.loads(body)
            assert error["status"] == status and error["error"]
        except (ValueError, TypeError, KeyError, AssertionError):
            found.append(f"{what}: not a JSON error: {body[:80]!r}")
    found += [f"{what}: leaks {secret!r}" for secret in SECRETS if secret in body.decode("utf-8", "replace") + headers]
    return found


def lookalike(session_id: int) -> str:
    """The id of a session that exists, in Arabic-Indic digits: a path that must not reach it."""
    return str(session_id).translate(ARABIC_INDIC)


def start_session(client) -> int:
    """Start a dashboard run (a no-op command) and wait for its end; its session id (ingested runs count too)."""
    started = client.post("/api/training/start")
    assert started.status_code == 202
    session_id = started.get_json()["session_id"]
    poll(lambda: client.get(f"/api/training/session/{session_id}").get_json()["status"], lambda s: s != "running")
    return session_id


def test_no_path_parameter_reaches_outside_files(planted, make_app):
    app = make_app(planted, TRAINING_COMMAND="python -c pass")
    client = app.test_client()
    session_id = start_session(client)
    found, sent = [], 0
    for method, template, allowed in targets(app):
        for payload in PAYLOADS + [lookalike(session_id), "b" * 100_000]:
            path = template.format(payload)
            answer = client.open(path, method=method)
            sent += 1
            found += problems(f"{method} {path[:60]}", path, answer.status_code, allowed, answer.get_data(),
                              str(answer.headers))
    assert sent >= 400 and not found, found[:20]


def test_traversal_over_the_wire_to_gunicorn(planted, tmp_path):
    """Request lines as sent, without a client's normalising: the app's answers, and gunicorn's own 400s."""
    with Gunicorn(planted, tmp_path / "srv", GUNICORN_WORKERS="1", TRAINING_COMMAND="python -c pass") as server:
        status, _, body = server.request("POST", "/api/training/start")
        assert status == 202
        payloads, found = PAYLOADS + [lookalike(json.loads(body)["session_id"])], []
        for template in ("/api/agents/{}", "/api/metrics/history/{}", "/api/storyboard/project/{}",
                         "/api/training/session/{}", "/static/{}"):
            for payload in payloads:  # printable ASCII as is; spaces and other characters as UTF-8 %XX
                path = template.format(quote(payload, safe="".join(map(chr, range(0x21, 0x7f)))))
                status, head, body = raw_get(server.port, path.encode())
                found += problems(f"GET {path[:60]}", path, status, {400, 404}, body, head.decode("latin-1"))
            for raw in MALFORMED:
                status, head, body = raw_get(server.port, template.format("").encode() + raw)
                found += problems(f"GET {template} + {raw!r}", "", status, {400}, body, head.decode("latin-1"))
    assert not found, found[:20]


def raw_get(port: int, target: bytes) -> tuple[int, bytes, bytes]:
    """One GET with `target` in the request line byte for byte; (status, head, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        sock.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        answer = b"".join(iter(lambda: sock.recv(65536), b""))
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), head, body


def test_links_out_of_the_orchestrator_folder_are_not_followed(planted, make_app):
    app = make_app(planted)
    client = app.test_client()
    agent = client.get("/api/agents/agent_98")
    assert agent.status_code == 200 and agent.get_json()["title"] is None and agent.get_json()["module"] is None
    assert any("agent_98_canary.py: refused" in w for w in agent.get_json()["warnings"])
    for path in ("/api/agents/agent_97", "/api/metrics/history/canary_metric", "/api/agents/etc",
                 "/api/metrics/history/etc", "/api/storyboard/project/etc", "/api/agents/canary"):
        assert client.get(path).status_code == 404, path
    # Nor does any other answer show what the links point to.
    reads = [r.rule for r in app.url_map.iter_rules()
             if "GET" in r.methods and not r.arguments and r.rule != "/api/stream"]
    assert len(reads) >= 25
    for path in reads + ["/api/agents/agent_98", "/api/logs/export?format=ndjson&days=365"]:
        answer = client.get(path)
        assert answer.status_code < 500, path
        assert not problems(path, "", answer.status_code, {answer.status_code}, answer.get_data(),
                            str(answer.headers)), path
