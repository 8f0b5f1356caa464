"""A webhook receiver for tests: an HTTP server that records every POST."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.servers import free_port


class _JoiningServer(ThreadingHTTPServer):
    """Waits for its request threads on close, so that no connection outlives the test."""

    daemon_threads = False
    block_on_close = True


class WebhookReceiver:
    """An HTTP server recording each POST: (path, delivery header, JSON body)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.received: list[tuple[str, str | None, dict[str, Any]]] = []
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            timeout = 5  # a connection that sends nothing does not hold stop() forever

            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                body = json.loads(self.rfile.read(length))
                received.append((self.path, self.headers.get("X-Hazardwatch-Delivery"), body))
                reply = b'{"errcode": 0, "errmsg": "ok"}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *_args: Any) -> None:
                pass

        self._server: ThreadingHTTPServer | None = None
        self._handler = Handler

    def start(self) -> None:
        self._server = _JoiningServer(("127.0.0.1", self.port), self._handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver(free_port())
    yield server
    server.stop()
