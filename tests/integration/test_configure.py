"""configure(): options changed under the row lock, logged as ``configured`` with old and new
values, a lowered threshold that is already reached trips at once, and the replay follows."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from freezegun import freeze_time
from sqlalchemy import func, select

from brama_sql import (
    ArgumentTypeError,
    Brama,
    Cause,
    InvalidArgumentError,
    Kind,
    NotRegisteredError,
    State,
)
from brama_sql.schema import permits

START = datetime(2031, 4, 1, 10, 0, tzinfo=timezone.utc)
LogCheck = Callable[..., Any]


def test_configure_changes_the_named_options_and_logs_old_and_new(
    brama: Brama, assert_log_explains_row: LogCheck
) -> None:
    with freeze_time(START):
        brama.register("svc", failure_threshold=5, expiry=60, metadata={"team": "a"})
        brama.failure("svc")
        status = brama.configure(
            "svc", failure_threshold=4, expiry=timedelta(seconds=90), metadata={"team": "b"}
        )
    assert (status.failure_threshold, status.expiry, status.metadata) == (4, 90.0, {"team": "b"})
    assert status.failure_count == 1 and status.state is State.CLOSED
    assert status.half_open_max_calls is None  # left out: kept
    event = brama.events("svc")[-1]
    assert event.kind is Kind.CONFIGURED
    assert event.occurred_at == START
    assert event.failure_count == 1
    assert event.actor == brama.actor()
    assert event.details == {
        "old": {"failure_threshold": 5, "expiry": 60.0, "metadata": {"team": "a"}},
        "new": {"failure_threshold": 4, "expiry": 90.0, "metadata": {"team": "b"}},
    }
    assert_log_explains_row(brama, "svc")


def test_configure_with_nothing_different_writes_nothing(brama: Brama) -> None:
    brama.register("svc", failure_threshold=5)
    before = brama.events("svc")
    brama.configure("svc")
    brama.configure("svc", failure_threshold=5, expiry=60.0, half_open_max_calls=None)
    assert brama.events("svc") == before


def test_a_lowered_threshold_already_reached_opens_the_circuit_at_once(
    brama: Brama, assert_log_explains_row: LogCheck
) -> None:
    with freeze_time(START):
        brama.register("svc", failure_threshold=10, expiry=30)
        for _ in range(4):
            brama.failure("svc")
        status = brama.configure("svc", failure_threshold=3)
        assert brama.available("svc") is False
    assert status.state is State.OPEN
    assert status.opened_at == START
    configured, moved = brama.events("svc")[-2:]
    assert configured.kind is Kind.CONFIGURED
    assert (moved.kind, moved.cause, moved.from_state, moved.to_state) == (
        Kind.TRANSITION,
        Cause.CONFIGURED,
        State.CLOSED,
        State.OPEN,
    )
    assert moved.reason == "failure threshold lowered"
    assert_log_explains_row(brama, "svc")
    with freeze_time(START + timedelta(seconds=31)):
        brama.success("svc")  # the probe closes it
        assert brama.status("svc").state is State.CLOSED
    assert_log_explains_row(brama, "svc")


@pytest.mark.parametrize("state", [State.UNKNOWN, State.OPEN, State.HALF_OPEN])
def test_a_lowered_threshold_trips_only_a_closed_circuit(
    brama: Brama, state: State, assert_log_explains_row: LogCheck
) -> None:
    with freeze_time(START) as frozen:
        brama.register("svc", failure_threshold=2, expiry=30)
        if state is not State.UNKNOWN:
            brama.failure("svc")
            brama.failure("svc")
        if state is State.HALF_OPEN:
            frozen.move_to(START + timedelta(seconds=30))
        brama.configure("svc", failure_threshold=1)
        assert brama.status("svc").state is state
    assert not any(event.cause is Cause.CONFIGURED for event in brama.events("svc"))
    assert_log_explains_row(brama, "svc")


def test_a_new_expiry_counts_from_when_the_circuit_opened(
    brama: Brama, assert_log_explains_row: LogCheck
) -> None:
    with freeze_time(START) as frozen:
        brama.register("svc", failure_threshold=1, expiry=600)
        brama.failure("svc")
        frozen.move_to(START + timedelta(seconds=50))
        brama.configure("svc", expiry=100)
        assert brama.available("svc") is False
        frozen.move_to(START + timedelta(seconds=100))
        assert brama.available("svc") is True
        brama.success("svc")
    assert brama.status("svc").state is State.CLOSED
    expiry = [event for event in brama.events("svc") if event.cause is Cause.EXPIRY]
    assert [event.occurred_at for event in expiry] == [START + timedelta(seconds=100)]
    assert_log_explains_row(brama, "svc")


def test_a_due_expiry_is_logged_under_the_old_options_first(
    brama: Brama, assert_log_explains_row: LogCheck
) -> None:
    with freeze_time(START) as frozen:
        brama.register("svc", failure_threshold=1, expiry=10)
        brama.failure("svc")
        frozen.move_to(START + timedelta(seconds=20))
        brama.configure("svc", expiry=1000)
    expired, configured = brama.events("svc")[-2:]
    assert (expired.cause, expired.occurred_at) == (Cause.EXPIRY, START + timedelta(seconds=10))
    assert configured.kind is Kind.CONFIGURED
    assert brama.status("svc").state is State.HALF_OPEN
    assert_log_explains_row(brama, "svc")


def test_lifting_the_probe_limit_drops_the_claimed_permits(
    brama: Brama, assert_log_explains_row: LogCheck
) -> None:
    with freeze_time(START) as frozen:
        brama.register("svc", failure_threshold=1, expiry=10, half_open_max_calls=1)
        brama.failure("svc")
        frozen.move_to(START + timedelta(seconds=11))
        assert brama.available("svc") is True  # claims the one permit
        brama.configure("svc", half_open_max_calls=None)
        with brama.engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(permits)).scalar_one() == 0
        brama.success("svc")  # unlimited probes: any report decides
    assert brama.status("svc").state is State.CLOSED
    assert_log_explains_row(brama, "svc")


def test_configure_races_reports_and_the_log_still_explains_the_row(
    make_brama: Callable[..., Brama], assert_log_explains_row: LogCheck
) -> None:
    setup = make_brama()
    setup.register("svc", failure_threshold=1000)
    errors: list[BaseException] = []

    def report() -> None:
        brama = make_brama()
        try:
            for _ in range(40):
                brama.failure("svc")
        except BaseException as error:  # collected and asserted below
            errors.append(error)

    threads = [threading.Thread(target=report) for _ in range(3)]
    for thread in threads:
        thread.start()
    for threshold in (900, 800, 700, 600, 500):
        setup.configure("svc", failure_threshold=threshold)
    for thread in threads:
        thread.join(60)
    assert errors == []
    status = setup.status("svc")
    assert status.total_failures == 120 and status.failure_threshold == 500
    assert [e.kind for e in setup.events("svc")].count(Kind.CONFIGURED) == 5
    assert_log_explains_row(setup, "svc")


def test_configure_of_an_unregistered_connection_raises(brama: Brama) -> None:
    with pytest.raises(NotRegisteredError):
        brama.configure("ghost", failure_threshold=3)
    assert brama.events() == []


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"failure_threshold": 0}, InvalidArgumentError),
        ({"failure_threshold": "3"}, ArgumentTypeError),
        ({"expiry": -1}, InvalidArgumentError),
        ({"half_open_max_calls": 0}, InvalidArgumentError),
        ({"probe_timeout": float("nan")}, InvalidArgumentError),
        ({"metadata": ["a"]}, ArgumentTypeError),
        ({"scope": ""}, InvalidArgumentError),
    ],
)
def test_bad_options_are_refused_before_anything_is_written(
    brama: Brama, options: dict[str, Any], error: type[Exception]
) -> None:
    brama.register("svc")
    before = brama.events("svc")
    with pytest.raises(error):
        brama.configure("svc", **options)
    assert brama.events("svc") == before


def test_a_new_expiry_that_already_elapsed_half_opens_the_circuit_now(
    brama: Brama, assert_log_explains_row: LogCheck
) -> None:
    with freeze_time(START) as frozen:
        brama.register("svc", failure_threshold=1, expiry=100)
        brama.failure("svc")
        frozen.move_to(START + timedelta(seconds=50))
        status = brama.configure("svc", expiry=10)
    assert status.state is State.HALF_OPEN
    assert status.state_changed_at == START + timedelta(seconds=50)
    configured, moved = brama.events("svc")[-2:]
    assert configured.kind is Kind.CONFIGURED
    assert (moved.cause, moved.from_state, moved.to_state, moved.occurred_at) == (
        Cause.EXPIRY,
        State.OPEN,
        State.HALF_OPEN,
        START + timedelta(seconds=50),
    )
    times = [event.occurred_at for event in brama.events("svc")]
    assert times == sorted(times), "the log never goes back in time"
    assert_log_explains_row(brama, "svc")


def test_a_shorter_probe_timeout_shortens_the_permits_already_claimed(
    make_brama: Callable[..., Brama], assert_log_explains_row: LogCheck
) -> None:
    first, second = make_brama(), make_brama()
    with freeze_time(START) as frozen:
        first.register("svc", failure_threshold=1, expiry=10, half_open_max_calls=1)
        first.failure("svc")
        frozen.move_to(START + timedelta(seconds=10))
        assert first.available("svc") is True  # claims the permit, lasting the expiry (10 s)
        first.configure("svc", probe_timeout=2)
        frozen.move_to(START + timedelta(seconds=11))
        assert second.available("svc") is False
        frozen.move_to(START + timedelta(seconds=12))
        assert second.available("svc") is True  # the stuck probe's permit expired at 12 s
        second.success("svc")
    assert first.status("svc").state is State.CLOSED
    assert_log_explains_row(first, "svc")
