"""The gthread worker of gunicorn_worker.py: the requests gunicorn refuses before the app sees them get the
app's JSON error shape, and a kept-alive connection ends after GUNICORN_KEEPALIVE_REQUESTS requests."""
from __future__ import annotations

import http.client
import json
import socket

from dashboard.web import gunicorn_worker
from servers import Gunicorn

FIELD_SIZE = 8190  # gunicorn's default limit_request_field_size (gunicorn.conf.py keeps it)


def raw(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send `request` as it is; (status, headers, body) of the answer, read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines)
    return int(status_line.split()[1]), headers, body


# plan T37, T24
def test_gunicorns_own_refusals_are_json_errors(orchestrator, tmp_path):
    too_many = b"".join(b"X-Field-%d: x\r\n" % i for i in range(101))
    requests = {
        "request line over limit_request_line": (b"GET /api/status?q=" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
                                                 414, "Request Line is too large"),
        "more header fields than limit_request_fields": (b"GET /api/status HTTP/1.1\r\nHost: x\r\n" + too_many + b"\r\n",
                                                         431, "limit request headers fields"),
        "a header field over limit_request_field_size": (
            b"GET /api/status HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (FIELD_SIZE + 10) + b"\r\n\r\n",
            431, "limit request headers fields size"),
        "a request that is no HTTP": (b"\x01\x02 nonsense\r\n\r\n", 400, "Invalid"),
    }
    with Gunicorn(orchestrator(days=0), tmp_path / "srv", to_file=True, GUNICORN_WORKERS="1") as server:
        answers = {name: raw(server.port, request) for name, (request, _, _) in requests.items()}
        app_status, app_headers, app_body = raw(server.port, b"GET /api/nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        _, doc = server.get_json("/api/openapi.json")
    for name, (status, headers, body) in answers.items():
        _, expected_status, expected_message = requests[name]
        assert status == expected_status, (name, status, body[:200])
        assert headers["Content-Type"] == "application/json", name
        error = json.loads(body)
        assert error["status"] == expected_status and expected_message in error["error"], (name, error)
        assert set(error) == {"error", "status"} and len(error["error"]) <= gunicorn_worker.MAX_MESSAGE + 3, name
        assert int(headers["Content-Length"]) == len(body), name
    # the headers are those of the app's own JSON errors
    assert app_status == 404 and json.loads(app_body)["status"] == 404
    for header, value in gunicorn_worker.HEADERS.items():
        assert app_headers[header] == value, header
    # the document lists them on every operation, in the Error shape
    error_schema = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    for path, item in doc["paths"].items():
        for method, op in item.items():
            for status in ("414", "431"):
                assert op["responses"][status]["content"] == error_schema, (method, path, status)
    # gunicorn still logs each refusal itself
    assert server.logs().count("Invalid request from ip=127.0.0.1") >= len(requests)


def test_a_kept_alive_connection_ends_after_its_requests_and_the_client_goes_on_over_a_new_one(orchestrator, tmp_path):
    with Gunicorn(orchestrator(days=0), tmp_path / "srv", GUNICORN_WORKERS="1", GUNICORN_KEEPALIVE_REQUESTS="3") as server:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=15)
        seen = []  # (the client's port, status, Connection header) of each answer
        for _ in range(7):
            conn.request("GET", "/api/status")
            port = conn.sock.getsockname()[1]
            response = conn.getresponse()
            response.read()
            seen.append((port, response.status, response.getheader("Connection")))
        conn.close()
    assert [status for _, status, _ in seen] == [200] * 7
    assert [header == "close" for _, _, header in seen] == [False, False, True, False, False, True, False]
    ports = [port for port, _, _ in seen]
    assert ports[0] == ports[1] == ports[2] != ports[3] == ports[4] == ports[5] != ports[6]
