"""The policies and forced states through ``AsyncBrama``: the options on register, configure
and the async decorator, durations measured by ``async with brama.guard(...)``, a slow-call
trip, the backoff, ``disable()`` and ``force_open()``; on every dialect."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta, timezone

import pytest
import pytest_asyncio
from freezegun import freeze_time
from freezegun.api import FrozenDateTimeFactory

from brama_sql import AsyncBrama, Brama, CircuitOpenError, Kind, State
from brama_sql.replay import verify

T0 = datetime(2032, 9, 8, 7, 6, 10, tzinfo=timezone.utc)

pytestmark = pytest.mark.asyncio


@pytest_asyncio.fixture
async def abrama(async_url: str) -> AsyncIterator[AsyncBrama]:
    """An :class:`AsyncBrama` whose defaults back off exponentially."""
    made = AsyncBrama(async_url, expiry=10, expiry_strategy="exponential", max_expiry=40)
    yield made
    await made.dispose()


@pytest.fixture
def clock() -> Iterator[FrozenDateTimeFactory]:
    with freeze_time(T0, real_asyncio=True) as frozen:
        yield frozen


async def test_slow_calls_measured_by_the_async_guard_trip_and_back_off(
    abrama: AsyncBrama, brama: Brama, clock: FrozenDateTimeFactory
) -> None:
    await abrama.register(
        "svc",
        expiry=10,
        slow_call_duration=1,
        slow_call_rate_threshold=0.5,
        minimum_calls=2,
    )
    async with abrama.guard("svc"):
        await asyncio.sleep(0)
    async with abrama.guard("svc"):
        clock.tick(timedelta(seconds=1.5))
    status = await abrama.status("svc")
    assert status.state is State.OPEN and status.current_expiry == 10.0
    assert (status.total_successes, status.expiry_strategy) == (2, "exponential")
    durations = [e.duration for e in await abrama.events("svc") if e.kind is Kind.SUCCESS]
    assert durations == [0.0, 1.5]
    with pytest.raises(CircuitOpenError) as refused:
        async with abrama.guard("svc"):
            raise AssertionError("the block must not run")
    assert refused.value.retry_after == 10.0
    clock.tick(timedelta(seconds=10))
    await abrama.failure("svc", reason="probe failed", duration=0.2)
    assert (await abrama.status("svc")).current_expiry == 20.0
    verify(brama.engine, "svc")


async def test_forced_states_and_the_policy_options_of_the_async_api(
    abrama: AsyncBrama, brama: Brama, clock: FrozenDateTimeFactory
) -> None:
    @abrama.protect("svc", register=True, failure_rate_threshold=0.5, minimum_calls=2)
    async def call() -> str:
        return "live"

    assert await call() == "live"
    await abrama.force_open("svc", reason="vendor outage")
    with pytest.raises(CircuitOpenError) as refused:
        await call()
    assert refused.value.retry_after is None
    await abrama.disable("svc")
    await abrama.failure("svc")
    await abrama.failure("svc")
    status = await abrama.status("svc")
    assert status.state is State.DISABLED and status.failure_rate_threshold == 0.5
    changed = await abrama.configure("svc", window=30)
    assert changed.window == 30.0
    await abrama.close("svc")
    assert await call() == "live"
    verify(brama.engine, "svc")
