"""Permit handles (``brama.acquire``): each handle is a caller of its own, whatever thread holds
it; the probe permit it claims is settled only by its own report; it reports once."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone

import pytest
from freezegun import freeze_time
from freezegun.api import FrozenDateTimeFactory
from sqlalchemy import select

from brama_sql import Brama, InvalidArgumentError, Kind, Permit, State
from brama_sql.replay import verify
from brama_sql.schema import permits

T0 = datetime(2031, 7, 8, 9, 10, 11, 500_000, tzinfo=timezone.utc)
EXPIRY = 60
MakeBrama = Callable[..., Brama]


@pytest.fixture
def clock() -> Iterator[FrozenDateTimeFactory]:
    with freeze_time(T0) as frozen:
        yield frozen


def half_open(brama: Brama, clock: FrozenDateTimeFactory, max_calls: int) -> None:
    """Register "svc" with ``max_calls`` permits, trip it, and move past its expiry."""
    brama.register("svc", failure_threshold=1, expiry=EXPIRY, half_open_max_calls=max_calls)
    brama.failure("svc")
    clock.tick(EXPIRY)
    assert brama.status("svc").state is State.HALF_OPEN


def holders(brama: Brama) -> list[str]:
    with brama.engine.connect() as conn:
        return list(conn.execute(select(permits.c.holder).order_by(permits.c.id)).scalars())


def test_two_handles_in_one_thread_are_two_callers(
    brama: Brama, clock: FrozenDateTimeFactory
) -> None:
    half_open(brama, clock, max_calls=1)
    first = brama.acquire("svc")
    second = brama.acquire("svc")
    assert isinstance(first, Permit) and first.probe
    assert second is None, "one permit: the second handle of the same thread is refused"
    assert holders(brama) == [first.holder]
    assert first.holder.startswith(brama.actor() + ":")
    assert first.holder == f"{brama.actor()}:{first.token}"
    moved = first.success()
    assert moved is not None and (moved.from_state, moved.to_state) == (
        State.HALF_OPEN,
        State.CLOSED,
    )
    assert holders(brama) == []
    verify(brama.engine, "svc")


def test_each_handle_settles_its_own_permit(brama: Brama, clock: FrozenDateTimeFactory) -> None:
    half_open(brama, clock, max_calls=2)
    first, second = brama.acquire("svc"), brama.acquire("svc")
    assert first is not None and second is not None and first.probe and second.probe
    assert sorted(holders(brama)) == sorted([first.holder, second.holder])
    # A plain report from the same thread holds neither permit: a late result.
    assert brama.failure("svc") is None
    assert brama.status("svc").state is State.HALF_OPEN
    assert len(holders(brama)) == 2
    clock.tick(1)
    moved = second.failure(reason="probe timed out")
    assert moved is not None and moved.to_state is State.OPEN, "second's own permit decided"
    assert holders(brama) == [], "leaving half-open dropped first's permit too"
    assert first.success() is None, "first's permit belonged to the episode that ended"
    log = [e for e in brama.events("svc") if e.kind in (Kind.SUCCESS, Kind.FAILURE)]
    assert [(e.kind, e.probe, e.actor) for e in log[1:]] == [
        (Kind.FAILURE, False, brama.actor()),
        (Kind.FAILURE, True, second.holder),
        (Kind.SUCCESS, False, first.holder),
    ]
    verify(brama.engine, "svc")


def test_a_handle_reported_from_another_thread_settles_its_permit(
    brama: Brama, clock: FrozenDateTimeFactory
) -> None:
    half_open(brama, clock, max_calls=1)
    permit = brama.acquire("svc")
    assert permit is not None and permit.probe
    outcome: list[object] = []
    thread = threading.Thread(target=lambda: outcome.append((permit.success(), permit.actor())))
    thread.start()
    thread.join()
    ((moved, writer),) = outcome
    assert moved is not None and moved.to_state is State.CLOSED  # type: ignore[attr-defined]
    report = [e for e in brama.events("svc") if e.kind is Kind.SUCCESS][-1]
    assert report.probe and report.actor == writer
    assert writer != permit.holder and writer.endswith(":" + permit.token)
    assert report.actor is not None and report.actor.split(":")[:3] == brama.actor().split(":")[:3]


def test_a_permit_is_settled_once(brama: Brama) -> None:
    brama.register("svc")
    permit = brama.acquire("svc")
    assert permit is not None and not permit.probe and not permit.settled
    with pytest.raises(InvalidArgumentError):
        permit.failure(reason="x" * 5000)
    assert not permit.settled, "bad input settles nothing"
    permit.success()
    assert permit.settled
    for settle in (permit.success, permit.failure, permit.release):
        with pytest.raises(InvalidArgumentError, match="already settled") as caught:
            settle()
        assert caught.value.argument == "permit"
    assert brama.status("svc").total_successes == 1
    assert "settled" in repr(permit)


def test_release_hands_the_probe_back_and_reports_nothing(
    brama: Brama, clock: FrozenDateTimeFactory
) -> None:
    half_open(brama, clock, max_calls=1)
    permit = brama.acquire("svc")
    assert permit is not None and brama.acquire("svc") is None
    permit.release()
    assert holders(brama) == []
    other = brama.acquire("svc")
    assert other is not None and other.probe
    kinds = [e.kind for e in brama.events("svc")]
    assert kinds.count(Kind.SUCCESS) == 0 and kinds.count(Kind.FAILURE) == 1


def test_a_closed_circuit_admits_without_a_permit_and_writes_nothing(brama: Brama) -> None:
    brama.register("svc", half_open_max_calls=1)
    before = len(brama.events())
    permit = brama.acquire("svc", scope=None)
    assert permit is not None and not permit.probe
    assert (permit.identifier, permit.scope) == ("svc", None)
    permit.release()
    assert len(brama.events()) == before and holders(brama) == []
    assert brama.acquire("ghost") is None


def test_plain_calls_keep_the_thread_as_the_caller(
    brama: Brama, clock: FrozenDateTimeFactory
) -> None:
    half_open(brama, clock, max_calls=1)
    assert brama.available("svc")
    assert brama.acquire("svc") is None, "the thread's permit is not the handle's"
    assert holders(brama) == [brama.actor()]
    brama.success("svc")
    assert brama.status("svc").state is State.CLOSED


def test_handles_of_many_threads_share_the_permits_exactly(
    make_brama: MakeBrama, clock: FrozenDateTimeFactory
) -> None:
    brama = make_brama()
    half_open(brama, clock, max_calls=2)
    barrier = threading.Barrier(6)
    got: list[Permit | None] = []
    lock = threading.Lock()

    def ask() -> None:
        barrier.wait()
        for _ in range(2):  # two handles per thread
            permit = brama.acquire("svc")
            with lock:
                got.append(permit)

    threads = [threading.Thread(target=ask) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    admitted = [permit for permit in got if permit is not None]
    assert len(got) == 12 and len(admitted) == 2
    assert sorted(holders(brama)) == sorted(permit.holder for permit in admitted)
    clock.tick(timedelta(seconds=1))
    admitted[0].success()
    assert brama.status("svc").state is State.CLOSED
