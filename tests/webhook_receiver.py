"""A webhook receiver of the tests' own: an HTTP server on 127.0.0.1 in a thread that records every
request (headers and raw body) and answers as the test says (a status per request, a delay)."""
from __future__ import annotations

import hashlib
import hmac
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Optional


class Receiver:
    """Records each POST; `answer(document)` gives the status (default 200), or (status, headers); `hold`
    (an Event, when set by the test) keeps each request waiting until it is set."""

    def __init__(self, port: int = 0, answer: Optional[Callable[[dict], int]] = None):
        self.received: list[dict] = []
        self.answer = answer or (lambda document: 200)
        self.hold: Optional[threading.Event] = None
        self.lock = threading.Lock()
        self.port = port
        self.server: Optional[ThreadingHTTPServer] = None

    def start(self) -> "Receiver":
        """Listen (on the same port as before, after a stop) and serve in a thread."""
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                document = json.loads(raw)
                with receiver.lock:
                    receiver.received.append({"headers": dict(self.headers), "raw": raw, "json": document,
                                              "path": self.path})
                if receiver.hold is not None:
                    receiver.hold.wait(60)
                answer = receiver.answer(document)
                status, headers = answer if isinstance(answer, tuple) else (answer, {})
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop listening: connections are then refused."""
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def url(self, path: str = "/hook?token=t0ps3cret-path") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def documents(self) -> list[dict]:
        """The JSON bodies received so far, in order (a slack body's {"text"} as it is)."""
        with self.lock:
            return [r["json"] for r in self.received]

    def requests(self) -> list[dict]:
        with self.lock:
            return list(self.received)


def signed(request: dict, secret: str) -> bool:
    """Whether the request's X-Dashboard-Signature is the HMAC-SHA256 of its raw body under `secret`."""
    expected = "sha256=" + hmac.new(secret.encode(), request["raw"], hashlib.sha256).hexdigest()
    return hmac.compare_digest(request["headers"].get("X-Dashboard-Signature", ""), expected)
