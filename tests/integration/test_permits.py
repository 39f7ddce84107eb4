"""Half-open probe permits: ``half_open_max_calls`` callers at most, claimed in the database,
settled by the holder's next report, expired after ``probe_timeout``, bound to one episode.
Each :class:`Brama` object stands for a separate caller (its :meth:`Brama.actor` differs)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime, timedelta, timezone

import pytest
from freezegun import freeze_time
from freezegun.api import FrozenDateTimeFactory
from sqlalchemy import func, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from brama_sql import Brama, Kind, State, transaction
from brama_sql.replay import verify
from brama_sql.schema import permits

T0 = datetime(2031, 3, 4, 5, 6, 7, 123_456, tzinfo=timezone.utc)
EXPIRY = 60
PROBE_TIMEOUT = 20


@pytest.fixture
def clock() -> FrozenDateTimeFactory:
    with freeze_time(T0) as frozen:
        yield frozen


@pytest.fixture
def callers(make_brama: Callable[..., Brama], clock: FrozenDateTimeFactory) -> list[Brama]:
    """Three callers sharing one database; "svc" is open with a 1-permit half-open."""
    made = [make_brama() for _ in range(3)]
    made[0].register(
        "svc",
        failure_threshold=1,
        expiry=EXPIRY,
        half_open_max_calls=1,
        probe_timeout=PROBE_TIMEOUT,
    )
    made[0].failure("svc")
    return made


def permit_count(brama: Brama) -> int:
    with brama.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(permits)).scalar_one()


def half_open(clock: FrozenDateTimeFactory) -> None:
    clock.move_to(T0 + timedelta(seconds=EXPIRY))


def test_only_max_calls_callers_get_through(
    callers: list[Brama], clock: FrozenDateTimeFactory
) -> None:
    a, b, c = callers
    half_open(clock)
    assert a.status("svc").state is State.HALF_OPEN
    assert [a.available("svc"), b.available("svc"), c.available("svc")] == [True, False, False]
    assert a.available("svc"), "a holder asking again keeps its permit"
    assert permit_count(a) == 1
    expiries = [e for e in a.events("svc") if e.cause is not None and e.cause.value == "expiry"]
    assert len(expiries) == 1, "claiming a permit persisted the expiry exactly once"
    verify(a.engine, "svc")


def test_two_permits(make_brama: Callable[..., Brama], clock: FrozenDateTimeFactory) -> None:
    a, b, c = (make_brama(half_open_max_calls=2) for _ in range(3))
    a.register("svc", failure_threshold=1, expiry=EXPIRY)
    assert a.status("svc").half_open_max_calls == 2
    a.open("svc")
    half_open(clock)
    assert [a.available("svc"), b.available("svc"), c.available("svc")] == [True, True, False]


def test_threads_of_one_process_are_separate_callers(
    callers: list[Brama], clock: FrozenDateTimeFactory
) -> None:
    a = callers[0]
    half_open(clock)
    answers: list[bool] = []
    thread = threading.Thread(target=lambda: answers.append(a.available("svc")))
    assert a.available("svc")
    thread.start()
    thread.join()
    assert answers == [False]


def test_the_holders_success_closes_the_circuit(
    callers: list[Brama], clock: FrozenDateTimeFactory
) -> None:
    a, b, _ = callers
    half_open(clock)
    assert a.available("svc") and not b.available("svc")
    a.success("svc")
    status = a.status("svc")
    assert status.state is State.CLOSED
    assert permit_count(a) == 0
    report = [e for e in a.events("svc") if e.kind is Kind.SUCCESS][-1]
    assert report.probe and report.actor == a.actor()
    verify(a.engine, "svc")


def test_the_holders_failure_reopens_for_a_new_episode(
    callers: list[Brama], clock: FrozenDateTimeFactory
) -> None:
    a, b, _ = callers
    half_open(clock)
    assert a.available("svc")
    clock.tick(5)
    a.failure("svc")
    status = a.status("svc")
    assert status.state is State.OPEN
    assert status.opened_at == T0 + timedelta(seconds=EXPIRY + 5)
    assert permit_count(a) == 0
    assert not b.available("svc")
    verify(a.engine, "svc")


def test_a_report_without_a_permit_decides_nothing(
    callers: list[Brama], clock: FrozenDateTimeFactory
) -> None:
    a, b, _ = callers
    half_open(clock)
    assert a.available("svc")
    b.success("svc")
    b.failure("svc")
    status = a.status("svc")
    assert status.state is State.HALF_OPEN
    assert status.total_successes == 1 and status.total_failures == 2
    late = [e for e in a.events("svc") if e.kind in (Kind.SUCCESS, Kind.FAILURE)][-2:]
    assert [e.probe for e in late] == [False, False]
    assert permit_count(a) == 1, "the holder's permit is untouched"
    verify(a.engine, "svc")


def test_an_expired_permit_frees_its_place(
    callers: list[Brama], clock: FrozenDateTimeFactory
) -> None:
    a, b, _ = callers
    half_open(clock)
    assert a.available("svc")
    clock.tick(PROBE_TIMEOUT - 1)
    assert not b.available("svc")
    clock.tick(1)
    assert b.available("svc"), "a probe that never reported frees its permit"
    assert not a.available("svc"), "the silent holder lost its permit"


def test_a_late_probe_does_not_settle_for_the_new_holder(
    callers: list[Brama], clock: FrozenDateTimeFactory
) -> None:
    a, b, _ = callers
    half_open(clock)
    assert a.available("svc")
    clock.tick(PROBE_TIMEOUT)
    assert b.available("svc")
    a.success("svc")
    assert a.status("svc").state is State.HALF_OPEN
    a.failure("svc")
    assert a.status("svc").state is State.HALF_OPEN, "neither closed nor reopened for b"
    b.success("svc")
    assert a.status("svc").state is State.CLOSED
    verify(a.engine, "svc")


def test_a_permit_of_an_earlier_episode_settles_nothing(
    callers: list[Brama], clock: FrozenDateTimeFactory
) -> None:
    a, b, _ = callers
    half_open(clock)
    assert a.available("svc")
    b.open("svc", reason="operator")
    clock.tick(EXPIRY)
    assert a.status("svc").state is State.HALF_OPEN
    a.success("svc")
    assert a.status("svc").state is State.HALF_OPEN, "a's permit was for the previous episode"
    assert b.available("svc")
    b.success("svc")
    assert a.status("svc").state is State.CLOSED
    verify(a.engine, "svc")


def test_probe_timeout_defaults_to_the_expiry(
    make_brama: Callable[..., Brama], clock: FrozenDateTimeFactory
) -> None:
    a, b = make_brama(), make_brama()
    status = a.register("svc", failure_threshold=1, expiry=EXPIRY, half_open_max_calls=1)
    assert status.probe_timeout == EXPIRY
    a.failure("svc")
    half_open(clock)
    assert a.available("svc")
    clock.tick(EXPIRY - 1)
    assert not b.available("svc")
    clock.tick(1)
    assert b.available("svc")


def test_unlimited_half_open_reads_only(
    make_brama: Callable[..., Brama], clock: FrozenDateTimeFactory
) -> None:
    a, b = make_brama(), make_brama()
    a.register("svc", failure_threshold=1, expiry=EXPIRY)
    a.failure("svc")
    half_open(clock)
    before = len(a.events("svc"))
    assert a.available("svc") and b.available("svc")
    assert len(a.events("svc")) == before and permit_count(a) == 0
    b.success("svc")
    assert a.status("svc").state is State.CLOSED
    verify(a.engine, "svc")


def test_register_overrides_the_constructor_defaults(
    make_brama: Callable[..., Brama], clock: FrozenDateTimeFactory
) -> None:
    brama = make_brama(half_open_max_calls=3, probe_timeout=5)
    assert brama.register("default").half_open_max_calls == 3
    assert brama.status("default").probe_timeout == 5
    unlimited = brama.register("unlimited", half_open_max_calls=None, probe_timeout=None)
    assert unlimited.half_open_max_calls is None
    assert unlimited.probe_timeout == unlimited.expiry


def test_probes_of_many_connections_do_not_deadlock(
    make_brama: Callable[..., Brama], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Threads probing different connections at once: permits of one connection never lock
    another's, so nothing fails with a deadlock, and every log explains its row. Real time
    runs here (a tiny expiry), so circuits cycle open -> half-open -> open quickly."""
    retried: list[BaseException] = []

    def counting(error: DBAPIError) -> bool:
        retryable = classify(error)
        if retryable:
            retried.append(error)
        return retryable

    classify = transaction._retryable
    monkeypatch.setattr(transaction, "_retryable", counting)
    names = [f"svc-{index}" for index in range(6)]
    setup = make_brama()
    for name in names:
        setup.register(
            name, failure_threshold=1, expiry=0.002, half_open_max_calls=2, probe_timeout=0.05
        )
        setup.open(name)
    raised: list[BaseException] = []
    granted: list[int] = []

    def probe(worker: int) -> None:
        # A deadlock is detected by the server at once, whatever the lock wait limit; the
        # longer limit keeps a starved SQLite writer on a loaded machine from failing the test.
        brama = make_brama(lock_timeout=30)
        try:
            for round_ in range(80):
                name = names[(worker + round_) % len(names)]
                if brama.available(name):
                    granted.append(1)
                    brama.failure(name, reason="still down")
        except BaseException as error:  # handed to the test thread
            raised.append(error)

    threads = [threading.Thread(target=probe, args=(worker,)) for worker in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert raised == []
    assert retried == [], "no deadlock, not even one that a retry hid"
    assert granted, "some probes went through"
    for name in names:
        verify(setup.engine, name)


def test_a_refused_caller_does_not_queue_for_the_row_lock(
    callers: list[Brama],
    clock: FrozenDateTimeFactory,
    hold_row_lock: Callable[..., AbstractContextManager[Connection]],
) -> None:
    a, b, _ = callers
    half_open(clock)
    assert a.available("svc")
    with hold_row_lock():
        started = time.monotonic()
        assert not b.available("svc"), "all permits are taken: the read alone says no"
        assert time.monotonic() - started < 2, "it did not wait for the lock (limit: 5 s)"
