"""``async with brama.guard(...)`` and ``@brama.protect(...)`` on coroutine functions, with
``AsyncBrama``: what counts, exclusions, cancellation never a failure, refusals and fallbacks,
50 concurrent tasks on one connection counted exactly, and one probe among many tasks."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import pytest
from freezegun import freeze_time
from freezegun.api import FrozenDateTimeFactory
from sqlalchemy import func, select

from brama_sql import (
    ArgumentTypeError,
    AsyncBrama,
    Brama,
    CircuitOpenError,
    Kind,
    NotRegisteredError,
    State,
)
from brama_sql.replay import verify
from brama_sql.schema import permits

T0 = datetime(2032, 9, 8, 7, 6, 5, 250_000, tzinfo=timezone.utc)

pytestmark = pytest.mark.asyncio


class Boom(Exception):
    """An error of the dependency."""


class Ignored(Exception):
    """An error that says nothing about the dependency's health."""


@pytest.fixture
def clock() -> Iterator[FrozenDateTimeFactory]:
    with freeze_time(T0, real_asyncio=True) as frozen:
        yield frozen


def reports(brama: Brama, identifier: str = "svc") -> list[tuple[str, str | None]]:
    return [
        (event.kind.value, event.reason)
        for event in brama.events(identifier)
        if event.kind in (Kind.SUCCESS, Kind.FAILURE)
    ]


def permit_count(brama: Brama) -> int:
    with brama.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(permits)).scalar_one()


async def all_other_tasks() -> None:
    """Wait for every other task of the loop, also those started meanwhile."""
    while pending := [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]:
        await asyncio.gather(*pending)


async def test_success_failure_and_the_same_exception_propagating(
    abrama: AsyncBrama, brama: Brama
) -> None:
    await abrama.register("svc", failure_threshold=10)
    async with abrama.guard("svc") as permit:
        await asyncio.sleep(0)
    assert permit.settled
    error = Boom("card declined")
    with pytest.raises(Boom) as caught:
        async with abrama.guard("svc"):
            raise error
    assert caught.value is error and error.__context__ is None
    assert reports(brama) == [("success", None), ("failure", "Boom: card declined")]
    verify(brama.engine, "svc")


async def test_excluded_exceptions_count_as_neither(abrama: AsyncBrama, brama: Brama) -> None:
    await abrama.register("svc", failure_threshold=1)
    for exclude in (Ignored, (Ignored, KeyError), lambda error: isinstance(error, Ignored)):
        with pytest.raises(Ignored):
            async with abrama.guard("svc", exclude=exclude):
                raise Ignored()
    assert reports(brama) == []
    assert (await abrama.status("svc")).state is State.UNKNOWN


async def test_a_cancelled_block_is_never_a_failure_and_hands_the_probe_back(
    abrama: AsyncBrama, brama: Brama, clock: FrozenDateTimeFactory
) -> None:
    await abrama.register("svc", failure_threshold=1, expiry=60, half_open_max_calls=1)
    await abrama.failure("svc")
    clock.tick(60)
    inside = asyncio.Event()

    async def probe() -> None:
        async with abrama.guard("svc") as permit:
            assert permit.probe
            inside.set()
            await asyncio.Event().wait()  # until cancelled

    task = asyncio.create_task(probe())
    await inside.wait()
    assert permit_count(brama) == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert permit_count(brama) == 0, "the probe permit was handed back"
    assert [kind for kind, _ in reports(brama)] == ["failure"], "nothing more was reported"
    async with abrama.guard("svc") as second:  # another caller may probe now
        assert second.probe
    assert (await abrama.status("svc")).state is State.CLOSED
    verify(brama.engine, "svc")


async def test_refusal_raises_circuit_open_error_and_the_block_does_not_run(
    abrama: AsyncBrama, brama: Brama, clock: FrozenDateTimeFactory
) -> None:
    await abrama.register("svc", failure_threshold=1, expiry=30)
    await abrama.failure("svc")
    clock.tick(10)
    ran = []
    with pytest.raises(CircuitOpenError) as refused:
        async with abrama.guard("svc"):
            ran.append(True)
    assert ran == []
    assert refused.value.identifier == "svc" and refused.value.scope is None
    assert refused.value.status is not None and refused.value.status.state is State.OPEN
    assert refused.value.retry_after == pytest.approx(20.0)
    with pytest.raises(NotRegisteredError):
        async with abrama.guard("missing"):
            pass
    async with abrama.guard("new", register=True, failure_threshold=3) as permit:
        assert not permit.probe
    assert (await abrama.status("new")).failure_threshold == 3
    assert reports(brama, "new") == [("success", None)]


async def test_protect_on_coroutine_functions_and_methods(abrama: AsyncBrama, brama: Brama) -> None:
    await abrama.register("svc", failure_threshold=3)

    @abrama.protect("svc", failure_if=lambda result: result == "degraded")
    async def fetch(answer: str) -> str:
        """Fetch an answer."""
        await asyncio.sleep(0)
        if answer == "boom":
            raise Boom(answer)
        return answer

    class Client:
        @abrama.protect("svc", exclude=Ignored)
        async def call(self, error: Exception | None = None) -> str:
            if error is not None:
                raise error
            return "ok"

        @staticmethod
        @abrama.protect("svc")
        async def ping() -> str:
            return "pong"

    assert fetch.__name__ == "fetch" and fetch.__doc__ == "Fetch an answer."
    assert await fetch("fine") == "fine"
    assert await fetch("degraded") == "degraded"
    with pytest.raises(Boom):
        await fetch("boom")
    assert await Client().call() == "ok"
    with pytest.raises(Ignored):
        await Client().call(Ignored())
    assert await Client.ping() == "pong"
    assert reports(brama) == [
        ("success", None),
        ("failure", "failure_if matched 'degraded'"),
        ("failure", "Boom: boom"),
        ("success", None),
        ("success", None),
    ]

    def plain() -> None: ...

    async def generator() -> Any:
        yield 1

    with pytest.raises(ArgumentTypeError, match="not a coroutine function"):
        abrama.protect("svc")(plain)  # type: ignore[arg-type]
    with pytest.raises(ArgumentTypeError, match="generator"):
        abrama.protect("svc")(generator)
    with pytest.raises(ArgumentTypeError, match="coroutine function"):
        brama.protect("svc")(fetch)  # the synchronous decorator refuses coroutine functions
    verify(brama.engine, "svc")


async def test_fallbacks_plain_and_asynchronous(abrama: AsyncBrama, brama: Brama) -> None:
    await abrama.register("svc")
    await abrama.open("svc")

    async def cached(order: int, *, currency: str) -> str:
        return f"cached {order} {currency}"

    @abrama.protect("svc", fallback=cached)
    async def charge(order: int, *, currency: str) -> str:
        raise AssertionError("never runs while open")

    @abrama.protect("svc", fallback=lambda order, currency: None)
    async def refund(order: int, *, currency: str) -> str:
        raise AssertionError("never runs while open")

    @abrama.protect("svc")
    async def plain(order: int) -> str:
        raise AssertionError("never runs while open")

    assert await charge(7, currency="EUR") == "cached 7 EUR"
    assert await refund(7, currency="EUR") is None
    with pytest.raises(CircuitOpenError):
        await plain(7)
    assert reports(brama) == []


async def test_fifty_concurrent_tasks_on_one_connection_are_counted_exactly(
    abrama: AsyncBrama, brama: Brama
) -> None:
    await abrama.register("svc", failure_threshold=1000)

    @abrama.protect("svc")
    async def call(number: int) -> int:
        await asyncio.sleep(0)
        if number % 5 == 0:
            raise Boom(str(number))
        return number

    async def guarded(number: int) -> None:
        async with abrama.guard("svc"):
            await asyncio.sleep(0)
            if number % 5 == 1:
                raise Boom(str(number))

    tasks = [call(n) for n in range(25)] + [guarded(n) for n in range(25)]
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    failed = [outcome for outcome in outcomes if isinstance(outcome, Boom)]
    assert len(failed) == 10 and len(outcomes) - len(failed) == 40
    status = await abrama.status("svc")
    assert (status.total_successes, status.total_failures) == (40, 10)
    assert status.state is State.CLOSED
    kinds = [kind for kind, _ in reports(brama)]
    assert kinds.count("success") == 40 and kinds.count("failure") == 10
    verify(brama.engine, "svc")


async def test_one_probe_among_many_concurrent_tasks(
    abrama: AsyncBrama, brama: Brama, clock: FrozenDateTimeFactory
) -> None:
    await abrama.register("svc", failure_threshold=1, expiry=60, half_open_max_calls=1)
    await abrama.failure("svc")
    clock.tick(60)
    release = asyncio.Event()
    admitted: list[int] = []
    refused: list[int] = []

    async def caller(number: int) -> None:
        try:
            async with abrama.guard("svc") as permit:
                assert permit.probe
                admitted.append(number)
                await release.wait()
        except CircuitOpenError:
            refused.append(number)
            if len(refused) == 19:
                release.set()

    await asyncio.gather(*(caller(n) for n in range(20)))
    assert len(admitted) == 1 and len(refused) == 19
    assert (await abrama.status("svc")).state is State.CLOSED
    assert permit_count(brama) == 0
    assert [kind for kind, _ in reports(brama)] == ["failure", "success"]
    verify(brama.engine, "svc")


async def test_an_admission_cancelled_in_flight_hands_its_probe_permit_back(
    abrama: AsyncBrama, brama: Brama, clock: FrozenDateTimeFactory
) -> None:
    await abrama.register("svc", failure_threshold=1, expiry=60, half_open_max_calls=1)
    await abrama.failure("svc")
    clock.tick(60)
    ran = []

    async def guarded() -> None:
        async with abrama.guard("svc"):
            ran.append(True)

    for admission in (guarded, lambda: abrama.acquire("svc")):
        task = asyncio.ensure_future(admission())
        await asyncio.sleep(0)  # the admission's transaction has begun
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await all_other_tasks()  # the admission, then the hand-back it starts
        assert permit_count(brama) == 0, "the abandoned probe permit was handed back"
    assert ran == []
    async with abrama.guard("svc") as permit:  # another caller may probe at once
        assert permit.probe
    assert (await abrama.status("svc")).state is State.CLOSED
    verify(brama.engine, "svc")
