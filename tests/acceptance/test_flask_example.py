"""``examples/flask_app`` for real: gunicorn with 4 workers, with and without ``--preload``, on
SQLite, PostgreSQL and MariaDB, in front of a fake inventory service that fails and then heals.
Exactly one trip; once the trip has committed every worker refuses (503 with ``Retry-After``)
without calling the inventory; no 5xx but the intended 503s; after the expiry a probe closes it.

The workers are separate processes, so the expiry (1 s) passes on the wall clock: the test polls
for the recovery in short steps, bounded by a deadline.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy.engine import URL

from brama_sql import Brama, Kind, State
from brama_sql.replay import verify

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "flask_app"
sys.path.insert(0, str(EXAMPLE))
from fake_inventory import FakeInventory  # noqa: E402

pytestmark = pytest.mark.slow
WORKERS = 4
BURST = 8
"""Requests sent at once: with sync workers busy one request each, a burst spreads over them."""


@dataclass(frozen=True)
class Answer:
    status: int
    worker: str
    refused: bool
    """A refusal of the open circuit: 503 with ``Retry-After``."""


def get(url: str) -> Answer:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return Answer(response.status, response.headers["X-Worker-Pid"], False)
    except urllib.error.HTTPError as error:
        headers = error.headers
        return Answer(error.code, headers["X-Worker-Pid"], "Retry-After" in headers)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def inventory() -> Iterator[FakeInventory]:
    server = FakeInventory().start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql", "mysql"], indirect=True)
@pytest.mark.parametrize("preload", [False, True], ids=["fork-then-import", "preload"])
def test_the_example_trips_once_refuses_everywhere_and_recovers(
    db_url: URL, inventory: FakeInventory, preload: bool, tmp_path: Path
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}/stock/sku-1"
    env = {
        **os.environ,
        "BRAMA_SQL_DATABASE_URI": db_url.render_as_string(hide_password=False),
        "BRAMA_SQL_EXPIRY": "1",
        "INVENTORY_URL": inventory.url,
    }
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        f"--workers={WORKERS}",
        f"--bind=127.0.0.1:{port}",
        f"--chdir={EXAMPLE}",
        "--graceful-timeout=2",
        *(["--preload"] if preload else []),
        "app:create_app()",
    ]
    log = (tmp_path / "gunicorn.log").open("w")
    server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    answers: list[Answer] = []
    pool = ThreadPoolExecutor(BURST)

    def burst() -> list[Answer]:
        got = list(pool.map(get, [base] * BURST))
        answers.extend(got)
        return got

    try:
        deadline = time.monotonic() + 30
        while True:  # up: every worker answers
            assert server.poll() is None, (tmp_path / "gunicorn.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "gunicorn.log").read_text()
            try:
                if len({answer.worker for answer in burst()}) == WORKERS:
                    break
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.1)
                answers.clear()
        assert {answer.status for answer in answers} == {200}
        workers = {answer.worker for answer in answers}

        inventory.failing = True
        for _ in range(20):  # until a refusal: the trip has committed
            if any(answer.refused for answer in burst()):
                break
        else:
            pytest.fail("the circuit never refused a call")
        calls = inventory.calls
        refusing: set[str] = set()
        for _ in range(40):  # every worker refuses from now on, without calling the inventory
            got = burst()
            assert all(answer.status == 503 and answer.refused for answer in got)
            refusing |= {answer.worker for answer in got}
            if refusing == workers:
                break
        assert refusing == workers
        assert inventory.calls == calls

        inventory.failing = False
        deadline = time.monotonic() + 10
        while not any(answer.status == 200 for answer in burst()):  # the expiry passes
            assert time.monotonic() < deadline, "no probe closed the circuit"
            time.sleep(0.05)
        assert all(answer.status == 200 for answer in burst())
    finally:
        pool.shutdown()
        server.send_signal(signal.SIGINT)  # quick shutdown
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()

    assert {answer.status for answer in answers} == {200, 503}  # no other 5xx
    brama = Brama(db_url)
    try:
        moves = [
            (event.from_state, event.to_state)
            for event in brama.events("inventory-api")
            if event.kind is Kind.TRANSITION
        ]
        assert moves == [
            (State.UNKNOWN, State.CLOSED),
            (State.CLOSED, State.OPEN),
            (State.OPEN, State.HALF_OPEN),
            (State.HALF_OPEN, State.CLOSED),
        ]
        status = brama.status("inventory-api")
        assert status.state is State.CLOSED
        assert status.total_failures >= 5
        failed = sum(answer.status == 503 and not answer.refused for answer in answers)
        assert status.total_failures == failed
        verify(brama.engine, "inventory-api", None)
    finally:
        brama.dispose()
