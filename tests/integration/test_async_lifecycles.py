"""AsyncBrama at the edges of a task's life: a guard closed from another task, the cleaner
stopped during a run, a report whose caller was cancelled just before the loop ends, permits
moved between tasks, cancellation at every await point, many tasks sharing two probes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from datetime import datetime, timezone

import pytest
from freezegun import freeze_time
from freezegun.api import FrozenDateTimeFactory
from sqlalchemy import func, select

from brama_sql import AsyncBrama, Brama, CircuitOpenError, State
from brama_sql.schema import permits

T0 = datetime(2032, 9, 8, 7, 6, 5, 250_000, tzinfo=timezone.utc)
pytestmark = pytest.mark.asyncio


@pytest.fixture
def clock() -> Iterator[FrozenDateTimeFactory]:
    with freeze_time(T0, real_asyncio=True) as frozen:
        yield frozen


def permit_count(brama: Brama) -> int:
    with brama.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(permits)).scalar_one()


async def test_guard_entered_and_exited_in_different_tasks(abrama: AsyncBrama) -> None:
    """An AsyncExitStack / async generator holding a guard, closed from another task."""
    await abrama.register("svc")
    guard = abrama.guard("svc")
    stack = contextlib.AsyncExitStack()

    async def enter() -> None:
        await stack.enter_async_context(guard)

    await asyncio.create_task(enter())
    await asyncio.create_task(stack.aclose())
    assert (await abrama.status("svc")).total_successes == 1


async def test_cleaner_stop_waits_for_the_cleanup_in_flight(abrama: AsyncBrama) -> None:
    """stop(): 'End the task and wait for it; a cleanup that is running is not interrupted
    (its transaction finishes)' -- so once stop() returns, nothing of the cleaner runs."""
    from sqlalchemy.util import await_only

    finished: list[int] = []

    def slow_cleanup() -> int:
        await_only(asyncio.sleep(0.3))  # a cleanup waiting on the database
        finished.append(1)
        return 0

    abrama.sync.cleanup = slow_cleanup  # type: ignore[method-assign]
    cleaner = abrama.start_cleaner(0.01)
    await asyncio.sleep(0.1)  # the first cleanup is in flight
    await cleaner.stop()
    assert finished == [1], "stop() returned while its cleanup was still running"
    assert cleaner.runs == 1


@pytest.mark.filterwarnings("ignore")
def test_a_report_whose_caller_was_cancelled_is_written_before_the_loop_ends(
    async_url: str, brama: Brama
) -> None:
    """docs/asyncio.md: 'a cancelled caller stops waiting at once, and the transaction runs on
    to its commit or rollback; a report that began is written'. An app shutting down
    (dispose, then asyncio.run's end) right after a cancelled report."""
    import threading

    brama.register("svc")

    async def main() -> None:
        made = AsyncBrama(async_url)
        reporting = asyncio.create_task(made.failure("svc", reason="began"))
        await asyncio.sleep(0)  # the report's transaction has begun
        await asyncio.sleep(0)
        reporting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reporting
        await made.dispose()

    errors: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(main())
        except BaseException as error:
            errors.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert brama.status("svc").total_failures == 1, errors


async def all_other_tasks() -> None:
    while pending := [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]:
        await asyncio.gather(*pending, return_exceptions=True)


async def test_a_permit_acquired_in_one_task_reported_in_another(
    abrama: AsyncBrama, brama: Brama, clock: FrozenDateTimeFactory
) -> None:
    await abrama.register("svc", failure_threshold=1, expiry=60, half_open_max_calls=1)
    await abrama.failure("svc")
    clock.tick(60)
    permit = await abrama.acquire("svc")
    assert permit is not None and permit.probe
    await asyncio.create_task(permit.success())
    assert (await abrama.status("svc")).state is State.CLOSED
    assert permit_count(brama) == 0


@pytest.mark.parametrize("delay_steps", [0, 1, 2, 3, 5, 8, 13])
async def test_cancellation_at_every_point_leaves_no_probe_permit(
    abrama: AsyncBrama, brama: Brama, clock: FrozenDateTimeFactory, delay_steps: int
) -> None:
    from brama_sql.replay import verify

    await abrama.register("svc", failure_threshold=1, expiry=60, half_open_max_calls=3)
    await abrama.failure("svc")
    clock.tick(60)
    release = asyncio.Event()

    async def caller(n: int) -> None:
        with contextlib.suppress(CircuitOpenError):
            async with abrama.guard("svc"):
                await release.wait()

    tasks = [asyncio.create_task(caller(n)) for n in range(12)]
    for _ in range(delay_steps):
        await asyncio.sleep(0)
    for task in tasks[::2]:
        task.cancel()
    await asyncio.sleep(0.05)
    release.set()
    await all_other_tasks()
    assert permit_count(brama) == 0
    verify(brama.engine, "svc")


async def test_available_and_reports_of_many_tasks_with_two_probes(
    abrama: AsyncBrama, brama: Brama, clock: FrozenDateTimeFactory
) -> None:
    from brama_sql.replay import verify

    await abrama.register("svc", failure_threshold=1, expiry=60, half_open_max_calls=2)
    await abrama.failure("svc")
    clock.tick(60)
    seen: list[object] = []

    def listener(event: object) -> None:
        seen.append(event)
        asyncio.get_running_loop().create_task(abrama.status("svc")).add_done_callback(
            lambda task: seen.append(task.result().state)
        )

    abrama.on_state_change(listener)

    answered: list[bool] = []
    everyone = asyncio.Event()

    async def caller() -> bool:
        ok = await abrama.available("svc")
        answered.append(ok)
        if len(answered) == 20:
            everyone.set()
        await everyone.wait()
        if ok:
            await abrama.success("svc")
        return ok

    admitted = await asyncio.gather(*(caller() for _ in range(20)))
    await all_other_tasks()
    assert sum(admitted) == 2
    assert (await abrama.status("svc")).state is State.CLOSED
    assert permit_count(brama) == 0
    states = [x for x in seen if isinstance(x, State)]
    assert len(states) == len(seen) // 2 and states[-1] is State.CLOSED
    verify(brama.engine, "svc")
