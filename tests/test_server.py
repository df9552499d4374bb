"""Smoke test against a real gunicorn server: it starts, serves JSON, and hides tracebacks."""
from __future__ import annotations

from servers import Gunicorn


def test_gunicorn_serves_the_api(orchestrator, tmp_path):
    server = Gunicorn(orchestrator(), tmp_path).start()
    try:
        for path in ("/api/dashboard/overview", "/api/agents/status", "/api/training/status",
                     "/api/metrics/quality", "/api/system/health"):
            status, body = server.get_json(path)
            assert status == 200 and body, path
        status, body = server.get_json("/api/status")
        assert status == 200 and body["database"] == "ok"
        status, body = server.get_json("/api/metrics/quality?days=999")
        assert status == 400 and "days" in body["error"]
        status, body = server.get_json("/api/nope")
        assert status == 404 and body == {"error": "no such endpoint: /api/nope", "status": 404}
    finally:
        assert server.stop() == 0
    log = server.log_path.read_text(encoding="utf-8")
    assert "GET /api/agents/status 200" in log
    assert "Traceback" not in log and b"Traceback" not in server.stderr
