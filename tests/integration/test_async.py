"""``AsyncBrama``: every method of ``Brama`` as a coroutine on SQLAlchemy's asyncio engines
(``sqlite+aiosqlite``, ``postgresql+psycopg``, ``mysql+aiomysql``), with the same arguments,
errors and records; each task a caller of its own; listeners after the commit; cancellation
never leaving a transaction half done. On every dialect, through URLs derived from the
fixtures' ones."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import pytest_asyncio
from freezegun import freeze_time
from freezegun.api import FrozenDateTimeFactory
from sqlalchemy import create_engine, func, select
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import create_async_engine

from brama_sql import (
    AlreadyRegisteredError,
    ArgumentTypeError,
    AsyncBrama,
    AsyncPermit,
    Brama,
    BramaError,
    Cause,
    ConnectionStatus,
    Event,
    InvalidArgumentError,
    Kind,
    NotRegisteredError,
    State,
    Transition,
)
from brama_sql.bridge import ASYNC_DRIVERS
from brama_sql.replay import verify
from brama_sql.schema import connections, events, permits

T0 = datetime(2032, 3, 4, 5, 6, 7, 125_000, tzinfo=timezone.utc)
MakeAsync = Callable[..., AsyncBrama]

pytestmark = pytest.mark.asyncio


@pytest_asyncio.fixture
async def make_async(async_url: str) -> AsyncIterator[MakeAsync]:
    """A factory of :class:`AsyncBrama` objects on the test's database (disposed afterwards)."""
    made: list[AsyncBrama] = []

    def make(**options: Any) -> AsyncBrama:
        brama = AsyncBrama(async_url, **options)
        made.append(brama)
        return brama

    yield make
    for brama in made:
        await brama.dispose()


@pytest.fixture
def clock() -> Iterator[FrozenDateTimeFactory]:
    with freeze_time(T0, real_asyncio=True) as frozen:
        yield frozen


def history(brama: Brama, identifier: str) -> list[tuple[Any, ...]]:
    """The connection's log without times and actors."""
    return [
        (event.kind, event.from_state, event.to_state, event.cause, event.reason)
        for event in brama.events(identifier)
    ]


def table_counts(brama: Brama) -> tuple[int, int, int]:
    with brama.engine.connect() as conn:
        return tuple(  # type: ignore[return-value]
            conn.execute(select(func.count()).select_from(table)).scalar_one()
            for table in (connections, events, permits)
        )


async def test_every_method_writes_and_returns_what_brama_does(
    make_async: MakeAsync, brama: Brama, clock: FrozenDateTimeFactory
) -> None:
    abrama = make_async()
    await abrama.migrate()  # idempotent on the migrated database

    async def scenario(name: str) -> list[object]:
        seen: list[object] = []
        seen.append(await abrama.register(name, scope="s", metadata={"team": "a"}))
        seen.append(await abrama.available(name, scope="s"))
        seen.append(await abrama.success(name, scope="s"))
        seen.append(await abrama.configure(name, scope="s", failure_threshold=2, expiry=30))
        seen.append(await abrama.failure(name, scope="s", reason="timeout"))
        seen.append(await abrama.failure(name, scope="s", reason="timeout"))
        seen.append(await abrama.available(name, scope="s"))
        clock.tick(30)
        permit = await abrama.acquire(name, scope="s")
        assert isinstance(permit, AsyncPermit)
        seen.append(await permit.success(reason="probe"))
        await abrama.open(name, scope="s", reason="maintenance")
        await abrama.close(name, scope="s")
        await abrama.reset(name, scope="s", reason="clean")
        seen.append(await abrama.status(name, scope="s"))
        return seen

    def sync_scenario(name: str) -> list[object]:
        seen: list[object] = []
        seen.append(brama.register(name, scope="s", metadata={"team": "a"}))
        seen.append(brama.available(name, scope="s"))
        seen.append(brama.success(name, scope="s"))
        seen.append(brama.configure(name, scope="s", failure_threshold=2, expiry=30))
        seen.append(brama.failure(name, scope="s", reason="timeout"))
        seen.append(brama.failure(name, scope="s", reason="timeout"))
        seen.append(brama.available(name, scope="s"))
        clock.tick(30)
        permit = brama.acquire(name, scope="s")
        assert permit is not None
        seen.append(permit.success(reason="probe"))
        brama.open(name, scope="s", reason="maintenance")
        brama.close(name, scope="s")
        brama.reset(name, scope="s", reason="clean")
        seen.append(brama.status(name, scope="s"))
        return seen

    async_seen = await scenario("async-svc")
    sync_seen = sync_scenario("sync-svc")

    def comparable(value: object) -> object:
        if isinstance(value, ConnectionStatus):
            return (value.state, value.failure_count, value.total_successes, value.total_failures)
        if isinstance(value, Transition):
            return (value.from_state, value.to_state, value.reason)
        return value

    assert [comparable(value) for value in async_seen] == [comparable(value) for value in sync_seen]
    assert isinstance(async_seen[2], Transition) and async_seen[2].to_state is State.CLOSED
    assert async_seen[6] is False, "the second failure tripped the circuit"
    assert history(brama, "async-svc") == history(brama, "sync-svc")
    assert history(brama, "async-svc")[-1][2:4] == (State.CLOSED, Cause.MANUAL_RESET)

    listed = await abrama.connections(scope="s")
    assert [status.identifier for status in listed] == ["async-svc", "sync-svc"]
    assert await abrama.connections(scope=None) == []
    logged = await abrama.events("async-svc", scope="s", limit=3)
    assert [event.kind for event in logged] == [Kind.REGISTERED, Kind.SUCCESS, Kind.TRANSITION]
    assert all(isinstance(event, Event) for event in logged)
    assert await abrama.events(since=T0 + timedelta(days=1)) == []
    for name in ("async-svc", "sync-svc"):
        verify(brama.engine, name, "s")

    abrama.declare("declared", failure_threshold=7)
    assert (await abrama.status("declared")).failure_threshold == 7
    await abrama.flush()  # nothing kept back: AsyncBrama has no batched reporting
    assert await abrama.unregister("async-svc", scope="s") is True
    assert await abrama.unregister("async-svc", scope="s") is False
    clock.tick(timedelta(days=30))
    assert await abrama.prune(timedelta(days=7)) > 0
    assert await make_async(inactive_after=60).cleanup() == 2  # sync-svc and declared
    assert await abrama.connections() == []


async def test_errors_are_those_of_brama_and_nothing_is_written(
    make_async: MakeAsync, brama: Brama
) -> None:
    abrama = make_async()
    await abrama.register("svc")
    brama.register("twin")
    before = table_counts(brama)
    bad: list[tuple[Callable[[Any], Awaitable[object]], Callable[[Brama], object]]] = [
        (lambda b: b.register("svc"), lambda b: b.register("twin")),
        (lambda b: b.status("missing"), lambda b: b.status("missing")),
        (lambda b: b.success("missing"), lambda b: b.success("missing")),
        (lambda b: b.open("missing"), lambda b: b.open("missing")),
        (lambda b: b.configure("missing", expiry=3), lambda b: b.configure("missing", expiry=3)),
        (lambda b: b.register("", scope="x"), lambda b: b.register("", scope="x")),
        (
            lambda b: b.register("n", failure_threshold=0),
            lambda b: b.register("n", failure_threshold=0),
        ),
        (lambda b: b.success(42), lambda b: b.success(42)),
        (lambda b: b.failure("svc", reason=b"x"), lambda b: b.failure("twin", reason=b"x")),
        (lambda b: b.events(limit=-1), lambda b: b.events(limit=-1)),
        (lambda b: b.events(since="yesterday"), lambda b: b.events(since="yesterday")),
        (lambda b: b.prune(-5), lambda b: b.prune(-5)),
        (lambda b: b.acquire("svc", scope=3), lambda b: b.acquire("twin", scope=3)),
    ]
    for asynchronous, synchronous in bad:
        with pytest.raises(BramaError) as expected:
            synchronous(brama)
        with pytest.raises(BramaError) as got:
            await asynchronous(abrama)
        assert type(got.value) is type(expected.value)
        assert str(got.value) == str(expected.value).replace("twin", "svc")
    assert table_counts(brama) == before
    with pytest.raises(AlreadyRegisteredError):
        await abrama.register("svc")
    with pytest.raises(NotRegisteredError):
        await abrama.status("missing")
    assert await abrama.available("missing") is False
    assert await abrama.acquire("missing") is None


async def test_urls_engines_and_options(
    async_url: str, dialect: str, db_url: URL, tmp_path: Any
) -> None:
    engine = create_async_engine(async_url)
    hosted = AsyncBrama(engine)
    try:
        assert hosted.engine is engine
        async with engine.connect() as conn:  # the host's connection, its transaction
            await hosted.migrate(conn)  # current already: nothing to do
            await conn.commit()
        with pytest.raises(ArgumentTypeError, match="AsyncConnection"):
            await hosted.migrate(engine)  # type: ignore[arg-type]
        assert (await hosted.register("hosted")).state is State.UNKNOWN
        assert await hosted.success("hosted") is not None
    finally:
        await hosted.dispose()
    if dialect == "sqlite":
        bare = AsyncBrama(f"sqlite:///{tmp_path / 'bare.db'}")  # takes aiosqlite
        assert bare.engine.url.drivername == "sqlite+aiosqlite"
        await bare.migrate()
        assert (await bare.register("fresh")).state is State.UNKNOWN
        await bare.dispose()
        for memory in ("sqlite://", "sqlite+aiosqlite:///:memory:"):
            with pytest.raises(InvalidArgumentError, match="file"):
                AsyncBrama(memory)
        shared = create_async_engine("sqlite+aiosqlite://")
        with pytest.raises(InvalidArgumentError, match="StaticPool"):
            AsyncBrama(shared)
        await shared.dispose()
    if dialect == "mysql":
        with pytest.raises(InvalidArgumentError, match="asyncio drivers"):
            AsyncBrama(db_url.render_as_string(hide_password=False))  # mysql+pymysql
    with pytest.raises(ArgumentTypeError, match="AsyncEngine"):
        AsyncBrama(create_engine(db_url))  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="batch_reports"):
        AsyncBrama(async_url, batch_reports=0.1)
    with pytest.raises(InvalidArgumentError, match="on_db_error"):
        AsyncBrama(async_url, on_db_error="ignore")  # type: ignore[arg-type]


async def test_each_task_is_a_caller_of_its_own(
    make_async: MakeAsync, brama: Brama, clock: FrozenDateTimeFactory
) -> None:
    abrama = make_async()
    await abrama.register("svc", failure_threshold=1, expiry=10, half_open_max_calls=1)
    await abrama.failure("svc")
    clock.tick(10)

    async def caller() -> tuple[str, str, bool]:
        first, second = abrama.actor(), abrama.actor()
        return first, second, await abrama.available("svc")

    one, two = await asyncio.gather(asyncio.create_task(caller()), asyncio.create_task(caller()))
    assert one[0] == one[1] and two[0] == two[1], "a task keeps its actor"
    assert one[0] != two[0] and one[0].rsplit(":", 1)[0] == two[0].rsplit(":", 1)[0]
    assert one[0].rsplit(":", 1)[1].startswith("task-")
    assert sorted([one[2], two[2]]) == [False, True], "one probe permit for two tasks"
    holder = one[0] if one[2] else two[0]
    with brama.engine.connect() as conn:
        assert list(conn.execute(select(permits.c.holder)).scalars()) == [holder]

    async def report_as_the_refused_task() -> Transition | None:
        return await abrama.success("svc")

    # A report of another task does not settle the permit (it is a late report of its own).
    await asyncio.create_task(report_as_the_refused_task())
    assert table_counts(brama)[2] == 1
    success_events = [e for e in brama.events("svc") if e.kind is Kind.SUCCESS]
    assert success_events[-1].actor != holder
    assert brama.status("svc").state is State.HALF_OPEN, "a late report decides nothing"
    verify(brama.engine, "svc")


async def test_listeners_are_told_after_the_commit_once_per_transition(
    make_async: MakeAsync, brama: Brama
) -> None:
    abrama = make_async()
    await abrama.register("svc", failure_threshold=2)
    told: list[tuple[Event, State]] = []

    spawned: list[tuple[str, str]] = []

    async def actor_of_a_new_task(event: Event) -> None:
        spawned.append((event.actor, abrama.actor()))

    @abrama.on_state_change
    def remember(event: Event) -> None:
        # Committed already: another connection sees the new state.
        told.append((event, brama.status("svc").state))
        asyncio.get_running_loop().create_task(actor_of_a_new_task(event))

    await abrama.failure("svc")
    await asyncio.gather(*(abrama.failure("svc") for _ in range(5)))
    await abrama.close("svc")
    transitions = [e for e in brama.events("svc") if e.kind is Kind.TRANSITION]
    assert [(e.from_state, e.to_state) for e, _ in told] == [
        (State.UNKNOWN, State.CLOSED),
        (State.CLOSED, State.OPEN),  # once, though five failures raced
        (State.OPEN, State.CLOSED),
    ]
    assert [e.id for e, _ in told] == [e.id for e in transitions]
    assert [state for _, state in told] == [State.CLOSED, State.OPEN, State.CLOSED]
    remember.remove()
    await abrama.open("svc")
    assert len(told) == 3
    await asyncio.sleep(0)
    assert len(spawned) == 3
    assert all(reporter != spawned_task for reporter, spawned_task in spawned), (
        "a task started by a listener is a caller of its own"
    )


async def test_a_cancelled_call_still_finishes_its_transaction(
    make_async: MakeAsync, brama: Brama
) -> None:
    abrama = make_async()
    await abrama.register("svc", failure_threshold=100)
    calls = [asyncio.create_task(abrama.failure("svc", reason=str(n))) for n in range(10)]
    await asyncio.sleep(0)  # every call has begun
    for call in calls:
        call.cancel()
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    assert all(isinstance(outcome, asyncio.CancelledError) for outcome in outcomes)
    # The callers stopped waiting; the transactions run on to their end.
    pending = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    await asyncio.gather(*pending)
    status = await abrama.status("svc")
    assert status.total_failures == 10 and status.failure_count == 10
    verify(brama.engine, "svc")


async def test_the_asyncio_cleaner_removes_inactive_connections(
    make_async: MakeAsync, clock: FrozenDateTimeFactory
) -> None:
    abrama = make_async(inactive_after=60)
    await abrama.register("old")
    clock.tick(61)
    await abrama.register("fresh")
    cleaner = abrama.start_cleaner(interval=0.01)
    assert cleaner.is_running and abrama.start_cleaner is not None
    for _ in range(500):  # at most 5 s; a run every 10 ms
        if cleaner.runs:
            break
        await asyncio.sleep(0.01)
    await cleaner.stop()
    assert not cleaner.is_running
    assert cleaner.removed == 1
    assert [status.identifier for status in await abrama.connections()] == ["fresh"]


async def test_migrate_builds_the_schema_alone_or_on_the_hosts_connection(
    blank_url: URL, dialect: str
) -> None:
    url = blank_url.set(drivername=ASYNC_DRIVERS[dialect]).render_as_string(hide_password=False)
    engine = create_async_engine(url)
    hosted = AsyncBrama(engine)
    try:
        async with engine.begin() as conn:  # the host's transaction, committed by the host
            await hosted.migrate(conn)
        assert (await hosted.register("svc")).state is State.UNKNOWN
    finally:
        await hosted.dispose()
    own = AsyncBrama(url)
    try:
        await own.migrate()  # current: idempotent
        assert [status.identifier for status in await own.connections()] == ["svc"]
    finally:
        await own.dispose()


async def test_stream_events_and_report_give_what_brama_gives(
    make_async: MakeAsync, brama: Brama, clock: FrozenDateTimeFactory
) -> None:
    abrama = make_async()
    await abrama.register("svc", scope="s", failure_threshold=2)
    await abrama.register("other")
    for _ in range(3):
        await abrama.failure("svc", scope="s", reason="timeout")
        await abrama.success("other")
        clock.tick(1)
    for page_size in (1, 3, 1000):
        streamed = [event async for event in abrama.stream_events(page_size=page_size)]
        assert streamed == list(brama.stream_events(page_size=page_size))
        assert len(streamed) == len(brama.events())
    kinds = [Kind.FAILURE, "transition"]
    streamed = [e async for e in abrama.stream_events("svc", kinds=kinds, newest=2, page_size=1)]
    assert streamed == list(brama.stream_events("svc", kinds=kinds, newest=2, page_size=1))
    assert [event.kind for event in streamed] == [Kind.TRANSITION, Kind.FAILURE]  # trip, late
    with pytest.raises(InvalidArgumentError):
        abrama.stream_events(page_size=0)  # checked at the call, as Brama's
    assert await abrama.report(60) == brama.report(60)
    assert await abrama.report(T0, scope="s") == brama.report(T0, scope="s")
