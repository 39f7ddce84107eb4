"""The failure-rate and slow-call policies: the window's boundaries (exactly at the threshold,
one below ``minimum_calls``, reports that leave the window), slow calls measured by the guard
and the decorator, replay, and bad options; on every dialect."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from freezegun import freeze_time
from freezegun.api import FrozenDateTimeFactory
from sqlalchemy import select

from brama_sql import ArgumentTypeError, Brama, InvalidArgumentError, Kind, State
from brama_sql.replay import verify
from brama_sql.schema import connections

T0 = datetime(2031, 5, 6, 7, 8, 10, tzinfo=timezone.utc)
"""On a whole 10 seconds: the start of a bucket of a 10-second window."""


@pytest.fixture
def clock() -> Iterator[FrozenDateTimeFactory]:
    with freeze_time(T0) as frozen:
        yield frozen


def trip_reason(brama: Brama, identifier: str) -> str | None:
    reasons = [e.reason for e in brama.events(identifier) if e.to_state is State.OPEN]
    return reasons[-1] if reasons else None


def test_the_failure_rate_opens_exactly_at_the_threshold_from_minimum_calls_on(
    brama: Brama, clock: FrozenDateTimeFactory
) -> None:
    for name, rate in (("at", 0.5), ("above", 0.51)):
        brama.register(
            name, failure_threshold=100, failure_rate_threshold=rate, window=10, minimum_calls=4
        )
        brama.failure(name)
        brama.success(name)
        brama.failure(name)
        status = brama.status(name)
        assert status.state is State.CLOSED, "2 of 3 failed, but one below minimum_calls"
        assert (status.window_calls, status.window_failures) == (3, 2)
        transition = brama.success(name)
        if name == "at":
            assert transition is not None and transition.to_state is State.OPEN
            assert trip_reason(brama, name) == "failure rate reached"
            status = brama.status(name)
            assert (status.window_calls, status.failure_count) == (0, 0), "window emptied"
        else:
            assert transition is None, "2 of 4 is under 51 %"
        verify(brama.engine, name)


def test_reports_leave_the_window_with_their_bucket(
    brama: Brama, clock: FrozenDateTimeFactory
) -> None:
    options = {"failure_threshold": 100, "failure_rate_threshold": 0.6, "minimum_calls": 3}
    brama.register("inside", window=10, **options)  # type: ignore[arg-type]
    brama.register("left", window=10, **options)  # type: ignore[arg-type]
    for name in ("inside", "left"):
        brama.failure(name)
        brama.failure(name)
    clock.tick(timedelta(seconds=9.999))
    assert brama.failure("inside") is not None, "3 of 3 within the window"
    clock.tick(timedelta(seconds=0.001))
    assert brama.status("left").window_calls == 0, "their bucket left the window at +10 s"
    brama.failure("left")
    status = brama.status("left")
    assert status.state is State.CLOSED and status.window_calls == 1
    assert status.failure_count == 3 and status.total_failures == 3
    for name in ("inside", "left"):
        verify(brama.engine, name)


def test_slow_calls_count_toward_their_rate_and_stay_successes(
    brama: Brama, clock: FrozenDateTimeFactory
) -> None:
    brama.register(
        "svc",
        slow_call_duration=2,
        slow_call_rate_threshold=0.5,
        minimum_calls=2,
        window=timedelta(minutes=1),
    )
    brama.success("svc", duration=2)  # not slower than 2 s
    with brama.guard("svc"):
        clock.tick(timedelta(seconds=2.001))
    status = brama.status("svc")
    assert status.state is State.OPEN and trip_reason(brama, "svc") == "slow call rate reached"
    assert status.total_successes == 2 and status.total_failures == 0
    reports = [e.duration for e in brama.events("svc") if e.kind is Kind.SUCCESS]
    assert reports == [2.0, 2.001]
    verify(brama.engine, "svc")


def test_the_decorator_measures_failures_and_the_rate_ignores_other_states(
    brama: Brama, clock: FrozenDateTimeFactory
) -> None:
    brama.register("svc", failure_rate_threshold=1, minimum_calls=1, expiry=5)

    @brama.protect("svc", failure_if=lambda result: result is None, fallback=lambda: "fallback")
    def call() -> str | None:
        clock.tick(timedelta(seconds=0.25))
        return None

    assert call() is None
    assert brama.status("svc").state is State.OPEN
    assert [e.duration for e in brama.events("svc") if e.kind is Kind.FAILURE] == [0.25]
    assert call() == "fallback"
    clock.tick(timedelta(seconds=5))
    brama.success("svc")  # the probe closes it; the window starts empty
    assert brama.status("svc").window_calls == 0
    brama.disable("svc")
    brama.failure("svc")
    assert brama.status("svc").state is State.DISABLED
    verify(brama.engine, "svc")


def test_rate_options_on_every_entry_point_and_bad_ones_refused(
    make_brama: Callable[..., Brama], clock: FrozenDateTimeFactory
) -> None:
    brama = make_brama(failure_rate_threshold=0.5, window=30)
    declared = make_brama(
        connections={"declared": {"slow_call_duration": 1, "slow_call_rate_threshold": 0.25}}
    )
    status = brama.register("svc")
    assert (status.failure_rate_threshold, status.window, status.minimum_calls) == (0.5, 30, None)
    declared.success("declared")
    status = declared.status("declared")
    assert (status.slow_call_duration, status.slow_call_rate_threshold) == (1.0, 0.25)
    changed = brama.configure("svc", minimum_calls=2, failure_rate_threshold=None)
    assert (changed.minimum_calls, changed.failure_rate_threshold) == (2, None)
    for bad in (
        {"failure_rate_threshold": 0},
        {"failure_rate_threshold": 1.5},
        {"slow_call_rate_threshold": -0.1},
        {"minimum_calls": 0},
        {"window": -1},
        {"slow_call_duration": 0},
        {"slow_call_rate_threshold": 0.5},  # no slow_call_duration
    ):
        with pytest.raises(InvalidArgumentError):
            brama.register("bad", **bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError):
        brama.configure("svc", slow_call_rate_threshold=0.5)
    with pytest.raises(ArgumentTypeError):
        brama.register("bad", failure_rate_threshold="half")  # type: ignore[typeddict-item]
    with pytest.raises(InvalidArgumentError, match="register=True"):
        brama.guard("svc", window=5)
    with pytest.raises(InvalidArgumentError):
        brama.success("svc", duration=-1)
    assert [s.identifier for s in brama.connections()] == ["declared", "svc"]
    assert [e.kind.value for e in brama.events("svc")] == ["registered", "configured"]


def test_healthy_successes_skip_the_row_write_and_are_folded_in_by_the_next_write(
    brama: Brama, clock: FrozenDateTimeFactory, connection_row: Any
) -> None:
    brama.register("svc", failure_threshold=100, failure_rate_threshold=0.5, minimum_calls=4)
    for _ in range(3):
        brama.success("svc")
    row = connection_row(brama, "svc", None)
    assert row["window_counts"] == [[bucket_of(T0), 1, 0, 0]], "2 successes only appended"
    verify(brama.engine, "svc")  # the replay counts the appended ones too
    brama.failure("svc")
    brama.failure("svc")
    row = connection_row(brama, "svc", None)
    assert row["window_counts"] == [[bucket_of(T0), 5, 2, 0]]
    assert brama.status("svc").state is State.CLOSED, "2 of 5"
    brama.success("svc")  # zeroes the consecutive count: the row is written
    assert connection_row(brama, "svc", None)["window_counts"] == [[bucket_of(T0), 6, 2, 0]]
    brama.success("svc")  # 2 of 7 and more can never reach 50 %: only appended
    assert connection_row(brama, "svc", None)["window_counts"] == [[bucket_of(T0), 6, 2, 0]]
    brama.failure("svc")
    brama.failure("svc")
    assert brama.status("svc").state is State.CLOSED, "4 of 9"
    brama.failure("svc")
    assert brama.status("svc").state is State.OPEN, "5 of 10 reached 50 %"
    verify(brama.engine, "svc")


def bucket_of(at: datetime) -> int:
    return int(at.timestamp() * 10) // 60


def test_configure_empties_the_window_when_its_rules_change(
    brama: Brama, clock: FrozenDateTimeFactory
) -> None:
    brama.register("svc", failure_threshold=100, failure_rate_threshold=0.9, window=10)
    brama.failure("svc")
    brama.failure("svc")
    assert brama.configure("svc", minimum_calls=5).window_calls == 2, "kept"
    assert brama.configure("svc", window=20).window_calls == 0, "other buckets"
    brama.failure("svc")
    assert brama.configure("svc", failure_rate_threshold=None).window_calls == 0
    assert connection_window(brama) is None
    verify(brama.engine, "svc")


def connection_window(brama: Brama) -> Any:
    with brama.engine.connect() as conn:
        return conn.execute(select(connections.c.window_counts)).scalar_one()


def test_threads_reporting_at_once_keep_the_window_exact(
    make_brama: Callable[..., Brama],
) -> None:
    brama = make_brama()
    brama.register(
        "svc", failure_threshold=1000, failure_rate_threshold=0.6, minimum_calls=20, window=600
    )
    brama.success("svc")

    def report(worker: int) -> None:
        for number in range(40):
            if (worker + number) % 4 == 0:
                brama.failure("svc", reason="boom")
            else:
                brama.success("svc", duration=0.01)

    threads = [threading.Thread(target=report, args=(worker,)) for worker in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    status = brama.status("svc")
    assert (status.total_successes, status.total_failures) == (121, 40)
    assert status.state is State.CLOSED, "40 of 161 is under 60 %"
    brama.failure("svc")  # an exclusive write folds every appended success in
    status = brama.status("svc")
    assert (status.window_calls, status.window_failures) == (162, 41)
    verify(brama.engine, "svc")


def test_batched_successes_and_the_decorator_with_register_take_the_policy(
    make_brama: Callable[..., Brama], clock: FrozenDateTimeFactory
) -> None:
    brama = make_brama(batch_reports=5)

    @brama.protect("svc", register=True, failure_rate_threshold=0.5, minimum_calls=4)
    def call(fail: bool) -> None:
        if fail:
            raise RuntimeError("down")

    call(False)
    for fail in (False, False, True):
        with contextlib.suppress(RuntimeError):
            call(fail)
    brama.flush()
    status = brama.status("svc")
    assert status.failure_rate_threshold == 0.5
    assert (status.total_successes, status.total_failures, status.state) == (3, 1, State.CLOSED)
    for expected in (State.CLOSED, State.OPEN):  # 2 of 5 failed, then 3 of 6
        with contextlib.suppress(RuntimeError):
            call(True)
        assert brama.status("svc").state is expected
    verify(brama.engine, "svc")


def test_pruning_keeps_the_window_explained(brama: Brama, clock: FrozenDateTimeFactory) -> None:
    brama.register(
        "svc",
        failure_threshold=1000,
        failure_rate_threshold=0.5,
        minimum_calls=50,
        expiry_strategy="exponential",
    )
    for number in range(6):
        brama.failure("svc") if number % 3 == 0 else brama.success("svc")
    clock.tick(timedelta(hours=2))
    for number in range(6):
        brama.failure("svc") if number % 3 == 0 else brama.success("svc")
        clock.tick(timedelta(seconds=1))
    assert brama.prune(3600) > 0
    status = brama.status("svc")
    assert (status.total_successes, status.total_failures) == (8, 4)
    verify(brama.engine, "svc")
    brama.success("svc")
    verify(brama.engine, "svc")
