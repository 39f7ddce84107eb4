"""A fake inventory service to protect: ``GET /stock/<sku>`` answers ``{"sku": ..., "stock":
...}`` while healthy and HTTP 500 (after a short delay) while failing. ``POST /fail`` and
``POST /heal`` switch it, or set :attr:`FakeInventory.failing` in-process.

    python fake_inventory.py 8001
"""

from __future__ import annotations

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FAILURE_DELAY_S = 0.05
"""How long a failing answer takes (a sick service is a slow one)."""


class FakeInventory(ThreadingHTTPServer):
    """The fake service; ``failing`` says how it answers."""

    daemon_threads = True

    def __init__(self, port: int = 0) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.failing = False
        self.calls = 0

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.server_address[1]}"

    def start(self) -> FakeInventory:
        """Serve from a daemon thread; ``shutdown()`` stops it."""
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self


class _Handler(BaseHTTPRequestHandler):
    server: FakeInventory

    def do_GET(self) -> None:
        self.server.calls += 1
        if not self.path.startswith("/stock/"):
            self._answer(404, {"error": "not found"})
        elif self.server.failing:
            time.sleep(FAILURE_DELAY_S)
            self._answer(500, {"error": "inventory database unreachable"})
        else:
            self._answer(200, {"sku": self.path.rsplit("/", 1)[-1], "stock": 42})

    def do_POST(self) -> None:
        if self.path in ("/fail", "/heal"):
            self.server.failing = self.path == "/fail"
            self._answer(200, {"failing": self.server.failing})
        else:
            self._answer(404, {"error": "not found"})

    def _answer(self, status: int, body: dict[str, object]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


if __name__ == "__main__":
    server = FakeInventory(int(sys.argv[1]) if len(sys.argv) > 1 else 8001)
    print(f"fake inventory on {server.url}: POST /fail, POST /heal")
    server.serve_forever()
