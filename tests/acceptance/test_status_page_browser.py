"""The status page as a browser shows it: a Flask app serving the status blueprint over real
HTTP, loaded in headless Chromium (Debian's ``chromium``), its rendered DOM checked and a
screenshot saved to ``test-artifacts/status-page.png`` (ignored by git).

Skips with the reason when ``chromium`` is not installed, and fails instead when
``BRAMA_SQL_REQUIRE_SERVERS=1`` (as in CI, whose ``.ci/run`` installs it).
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from flask import Flask
from freezegun import freeze_time
from werkzeug.serving import make_server

from brama_sql import Brama
from brama_sql.contrib.flask import BramaSQL

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
REQUIRE = os.environ.get("BRAMA_SQL_REQUIRE_SERVERS") == "1"


@pytest.fixture
def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        message = "headless Chromium is not installed (apt-get install -y chromium)"
        if REQUIRE:
            pytest.fail(f"{message} (BRAMA_SQL_REQUIRE_SERVERS=1)", pytrace=False)
        pytest.skip(message)
    return found


@pytest.fixture
def served(tmp_path: Path) -> Iterator[str]:
    """The status page of a small fleet at ``http://127.0.0.1:PORT/status/``."""
    url = f"sqlite:///{tmp_path / 'brama.db'}"
    brama = Brama(url, failure_threshold=2, expiry=2 * 3600)
    brama.migrate()
    with freeze_time(timedelta(hours=-20), tick=True):
        for name in ("payments-api", "search", "inventory-api"):
            brama.register(name, scope="shop", metadata={"owner": "team-secret"})
            brama.success(name, scope="shop")
    with freeze_time(timedelta(hours=-3), tick=True):
        brama.failure("payments-api", scope="shop")
        brama.failure("payments-api", scope="shop")
    with freeze_time(timedelta(minutes=-30), tick=True):
        brama.failure("inventory-api", scope="shop")
        brama.failure("inventory-api", scope="shop")
    brama.dispose()
    app = Flask("status", instance_path=str(tmp_path))
    app.config["BRAMA_SQL_DATABASE_URI"] = url
    ext = BramaSQL(app)
    app.register_blueprint(ext.status_blueprint(lambda: True), url_prefix="/status")
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/status/"
    server.shutdown()
    thread.join(10)
    app.extensions["brama_sql"].dispose()


def run_chromium(chromium: str, profile: Path, *args: str) -> str:
    command = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        "--window-size=1280,720",
        *args,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)
    return done.stdout


def test_chromium_shows_every_connection_its_state_and_timeline(
    chromium: str, served: str, tmp_path: Path
) -> None:
    dom = run_chromium(chromium, tmp_path / "profile", "--dump-dom", served)
    rows = re.findall(r'<tr class="connection state-row-(\w+)">(.*?)</tr>', dom, re.S)
    shown = {re.search(r'class="identifier">([^<]+)<', row)[1]: state for state, row in rows}  # type: ignore[index]
    assert shown == {"inventory-api": "open", "payments-api": "half_open", "search": "closed"}
    # payments-api tripped 3 h ago and is half-open since its 2 h expiry ran out:
    payments = next(row for state, row in rows if state == "half_open")
    assert re.findall(r'class="seg-(\w+)"', payments) == ["unknown", "closed", "open", "half_open"]
    assert "1 trip in 24 h" in payments
    for summary in ("open: 1", "half-open: 1", "closed: 1", "unknown: 0"):
        assert summary in dom
    assert "team-secret" not in dom and "<script" not in dom
    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "status-page.png"
    screenshot.unlink(missing_ok=True)
    run_chromium(chromium, tmp_path / "profile", f"--screenshot={screenshot}", served)
    png = screenshot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert (width, height) == (1280, 720)
    assert len(png) > 10_000  # a rendered page, not a blank one
    shutil.copy(screenshot, tmp_path / "status-page.png")
