"""``AsyncBrama`` against a server gone silent (through the TCP proxy of :mod:`proxy`): the
watchdog cuts the asyncio driver's connection, so the call ends within ``lock_timeout +
io_timeout`` as in ``Brama``, the event loop runs other tasks meanwhile, and the same object
works again once the server answers."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator

import pytest
from proxy import Proxy
from sqlalchemy.engine import URL

from brama_sql import AsyncBrama, Brama, BramaDatabaseError, Kind
from brama_sql.replay import verify

LOCK_TIMEOUT = 2.0
IO_TIMEOUT = 2.0
BOUND = LOCK_TIMEOUT + IO_TIMEOUT
SLACK = 0.6
ASYNC_DRIVERS = {"postgresql": "postgresql+psycopg", "mysql": "mysql+aiomysql"}

pytestmark = [
    pytest.mark.parametrize("dialect", ["postgresql", "mysql"], indirect=True),
    pytest.mark.asyncio,
]


@pytest.fixture
def proxy(db_url: URL) -> Iterator[Proxy]:
    """A proxy in front of the test database's server."""
    running = Proxy(db_url.port or (5432 if db_url.get_backend_name() == "postgresql" else 3306))
    yield running
    running.close()


async def test_a_silent_server_is_given_up_on_within_the_bound_without_blocking_the_loop(
    db_url: URL, dialect: str, proxy: Proxy, brama: Brama, caplog: pytest.LogCaptureFixture
) -> None:
    brama.register("svc", failure_threshold=100)
    url = db_url.set(drivername=ASYNC_DRIVERS[dialect], host="127.0.0.1", port=proxy.port)
    client = AsyncBrama(
        url.render_as_string(hide_password=False),
        lock_timeout=LOCK_TIMEOUT,
        io_timeout=IO_TIMEOUT,
    )
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.05)
            ticks += 1

    try:
        await client.failure("svc", reason="before")
        proxy.stall()
        running = asyncio.create_task(ticker())
        started = time.monotonic()
        try:
            with (
                caplog.at_level(logging.WARNING, logger="brama_sql"),
                pytest.raises(BramaDatabaseError),
            ):
                await client.failure("svc", reason="lost")
        finally:
            proxy.resume()
            running.cancel()
        elapsed = time.monotonic() - started
        assert elapsed < BOUND + SLACK
        assert any("passed its time bound" in r.getMessage() for r in caplog.records)
        assert ticks >= elapsed / 0.05 / 2, "the event loop ran other tasks meanwhile"
        await client.failure("svc", reason="after")  # the same object, the server back
        assert await client.available("svc") is True
    finally:
        await client.dispose()
    reasons = [event.reason for event in brama.events("svc") if event.kind is Kind.FAILURE]
    assert reasons.count("before") == 1 and reasons.count("after") == 1
    assert reasons.count("lost") <= 1  # a commit may have gone through before the stall
    verify(brama.engine, "svc")
