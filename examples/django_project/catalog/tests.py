"""The shop against a real (fake) inventory service over HTTP, failing then healing:
``python manage.py test`` (on the database SHOP_DATABASE names, SQLite by default)."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from django.test import TestCase, override_settings
from freezegun import freeze_time

from brama_sql import State
from brama_sql.contrib.django.testing import BramaTestMixin


class FakeInventory(BaseHTTPRequestHandler):
    """Answers ``{"count": 7}``, or 500 while ``broken``; counts the calls."""

    broken = False
    calls = 0

    def do_GET(self) -> None:
        type(self).calls += 1
        status, body = (500, b"down") if self.broken else (200, json.dumps({"count": 7}).encode())
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class ShopTests(BramaTestMixin, TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.server = ThreadingHTTPServer(("127.0.0.1", 0), FakeInventory)
        threading.Thread(target=cls.server.serve_forever, daemon=True).start()
        port = cls.server.server_address[1]
        cls.pointed = override_settings(INVENTORY_URL=f"http://127.0.0.1:{port}")
        cls.pointed.enable()

    @classmethod
    def tearDownClass(cls) -> None:
        cls.pointed.disable()
        cls.server.shutdown()
        cls.server.server_close()
        super().tearDownClass()

    def test_failing_then_healing_trips_exactly_once(self) -> None:
        FakeInventory.broken, FakeInventory.calls = False, 0
        with freeze_time(datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)) as clock:
            self.assertEqual(self.client.get("/stock/pen").json(), {"item": "pen", "stock": 7})
            FakeInventory.broken = True
            codes = [self.client.get("/stock/pen").status_code for _ in range(6)]
            self.assertEqual(codes, [502, 502, 502, 503, 503, 503])  # threshold 3
            self.assertEqual(FakeInventory.calls, 4)  # not called while open
            refused = self.client.get("/stock/pen")
            self.assertEqual(refused["Retry-After"], "30")
            FakeInventory.broken = False
            clock.tick(timedelta(seconds=30))
            self.assertEqual(self.client.get("/stock/pen").status_code, 200)  # the probe
            self.assertEqual(self.client.get("/stock/pen").status_code, 200)
        self.assertEqual(self.brama.status("inventory-api").state, State.CLOSED)
        opened = [e for e in self.brama.events("inventory-api") if e.to_state == State.OPEN]
        self.assertEqual(len(opened), 1)
