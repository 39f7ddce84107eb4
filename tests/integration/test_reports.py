"""success() and failure(): every transition of the state machine, through the public API."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

from freezegun import freeze_time

from brama_sql import Brama, Event, State

START = datetime(2024, 3, 1, 12, 34, 56, 789012, tzinfo=timezone.utc)
LogCheck = Callable[..., Any]


def _new_events(brama: Brama, seen: int, identifier: str = "db") -> list[Event]:
    return brama.events(identifier, scope=None)[seen:]


def _shape(log: list[Event]) -> list[tuple[str, str | None, str | None, int]]:
    """The kind, from/to states and failure count of each event."""
    return [
        (
            event.kind.value,
            None if event.from_state is None else event.from_state.value,
            None if event.to_state is None else event.to_state.value,
            event.failure_count,
        )
        for event in log
    ]


def test_unknown_plus_success_closes(brama: Brama, assert_log_explains_row: LogCheck) -> None:
    with freeze_time(START) as frozen:
        brama.register("db")
        frozen.tick(5)
        brama.success("db")
    status = brama.status("db")
    assert status.state is State.CLOSED
    assert status.failure_count == 0
    assert _shape(_new_events(brama, 1)) == [
        ("success", None, None, 0),
        ("transition", "unknown", "closed", 0),
    ]
    success, transition = _new_events(brama, 1)
    assert success.occurred_at == transition.occurred_at == START + timedelta(seconds=5)
    assert success.id < transition.id
    assert status.state_changed_at == START + timedelta(seconds=5)
    assert_log_explains_row(brama, "db")


def test_unknown_plus_failure_below_threshold_closes_with_count_one(
    brama: Brama, assert_log_explains_row: LogCheck
) -> None:
    brama.register("db", failure_threshold=3)
    brama.failure("db", reason="timeout")
    status = brama.status("db")
    assert status.state is State.CLOSED
    assert status.failure_count == 1
    assert status.opened_at is None
    log = _new_events(brama, 1)
    assert _shape(log) == [
        ("failure", None, None, 1),
        ("transition", "unknown", "closed", 1),
    ]
    assert log[0].reason == "timeout"
    assert_log_explains_row(brama, "db")


def test_unknown_plus_failure_at_threshold_one_opens(
    brama: Brama, assert_log_explains_row: LogCheck
) -> None:
    with freeze_time(START):
        brama.register("db", failure_threshold=1)
        brama.failure("db")
        status = brama.status("db")
        assert status.state is State.OPEN
        assert status.opened_at == START
        assert status.failure_count == 1
        assert brama.available("db") is False
    assert _shape(_new_events(brama, 1)) == [
        ("failure", None, None, 1),
        ("transition", "unknown", "open", 1),
    ]
    assert_log_explains_row(brama, "db")


def test_failures_trip_exactly_at_the_threshold(
    brama: Brama, assert_log_explains_row: LogCheck
) -> None:
    with freeze_time(START) as frozen:
        brama.register("db", failure_threshold=3)
        brama.success("db")
        seen = len(brama.events("db"))
        for expected_count in (1, 2):
            frozen.tick(1)
            brama.failure("db")
            status = brama.status("db")
            assert status.state is State.CLOSED
            assert status.failure_count == expected_count
            assert status.opened_at is None
            assert brama.available("db") is True
            assert_log_explains_row(brama, "db")
        frozen.tick(1)
        brama.failure("db", reason="third")
        tripped_at = START + timedelta(seconds=3)
        status = brama.status("db")
        assert status.state is State.OPEN
        assert status.failure_count == 3
        assert status.opened_at == tripped_at
        assert status.state_changed_at == tripped_at
        assert brama.available("db") is False
    log = _new_events(brama, seen)
    assert _shape(log) == [
        ("failure", None, None, 1),
        ("failure", None, None, 2),
        ("failure", None, None, 3),
        ("transition", "closed", "open", 3),
    ]
    assert log[-1].occurred_at == tripped_at
    assert log[-2].reason == "third"
    assert_log_explains_row(brama, "db")


def test_success_in_closed_zeroes_the_count_without_a_transition(
    brama: Brama, assert_log_explains_row: LogCheck
) -> None:
    brama.register("db", failure_threshold=3)
    brama.failure("db")
    brama.failure("db")
    assert brama.status("db").failure_count == 2
    seen = len(brama.events("db"))
    brama.success("db")
    status = brama.status("db")
    assert status.state is State.CLOSED
    assert status.failure_count == 0
    assert _shape(_new_events(brama, seen)) == [("success", None, None, 0)]
    # The count restarts: two more failures still do not trip a threshold of three.
    brama.failure("db")
    brama.failure("db")
    assert brama.status("db").state is State.CLOSED
    assert_log_explains_row(brama, "db")


def test_late_reports_while_open_are_counted_but_change_nothing_else(
    brama: Brama, assert_log_explains_row: LogCheck
) -> None:
    with freeze_time(START) as frozen:
        brama.register("db", failure_threshold=2, expiry=60)
        brama.failure("db")
        brama.failure("db")
        opened = brama.status("db")
        assert opened.state is State.OPEN
        assert opened.opened_at == START
        seen = len(brama.events("db"))

        frozen.tick(10)
        brama.failure("db", reason="late failure")
        late_failure = brama.status("db")
        assert late_failure.state is State.OPEN
        assert late_failure.opened_at == START
        assert late_failure.failure_count == 3
        assert late_failure.total_failures == 3
        assert late_failure.last_failure_time == START + timedelta(seconds=10)
        assert late_failure.state_changed_at == START
        assert brama.available("db") is False

        frozen.tick(10)
        brama.success("db", reason="late success")
        late_success = brama.status("db")
        assert late_success.state is State.OPEN
        assert late_success.opened_at == START
        assert late_success.failure_count == 0
        assert late_success.total_successes == 1
        assert late_success.last_success_time == START + timedelta(seconds=20)
        assert late_success.state_changed_at == START
        assert brama.available("db") is False

        frozen.tick(10)
        brama.failure("db")
        assert brama.status("db").failure_count == 1
        assert brama.status("db").opened_at == START

        # The expiry still runs from the original opening, untouched by the late reports.
        frozen.move_to(START + timedelta(seconds=60))
        assert brama.status("db").state is State.HALF_OPEN
    assert _shape(_new_events(brama, seen)) == [
        ("failure", None, None, 3),
        ("success", None, None, 0),
        ("failure", None, None, 1),
    ]
    assert_log_explains_row(brama, "db")


def _open_and_expire(brama: Brama, frozen: Any) -> None:
    """Register ``db`` (threshold 2, expiry 30 s) at START, trip it, and wait out the expiry."""
    brama.register("db", failure_threshold=2, expiry=30)
    brama.failure("db")
    brama.failure("db")
    frozen.move_to(START + timedelta(seconds=45))
    assert brama.status("db").state is State.HALF_OPEN


def test_half_open_plus_success_closes(brama: Brama, assert_log_explains_row: LogCheck) -> None:
    with freeze_time(START) as frozen:
        _open_and_expire(brama, frozen)
        seen = len(brama.events("db"))
        brama.success("db")
    status = brama.status("db")
    assert status.state is State.CLOSED
    assert status.failure_count == 0
    assert status.opened_at == START  # still when the circuit was last opened
    assert brama.available("db") is True
    log = _new_events(brama, seen)
    assert _shape(log) == [
        ("transition", "open", "half_open", 2),
        ("success", None, None, 0),
        ("transition", "half_open", "closed", 0),
    ]
    assert log[0].occurred_at == START + timedelta(seconds=30)
    assert log[1].occurred_at == log[2].occurred_at == START + timedelta(seconds=45)
    assert_log_explains_row(brama, "db")


def test_half_open_plus_failure_reopens_and_restarts_the_expiry(
    brama: Brama, assert_log_explains_row: LogCheck
) -> None:
    reopened_at = START + timedelta(seconds=45)
    with freeze_time(START) as frozen:
        _open_and_expire(brama, frozen)
        seen = len(brama.events("db"))
        brama.failure("db", reason="probe timeout")
        status = brama.status("db")
        assert status.state is State.OPEN
        assert status.failure_count == 3
        assert status.opened_at == reopened_at
        assert status.state_changed_at == reopened_at
        assert brama.available("db") is False

        frozen.move_to(reopened_at + timedelta(seconds=30) - timedelta(microseconds=1))
        assert brama.status("db").state is State.OPEN
        frozen.move_to(reopened_at + timedelta(seconds=30))
        assert brama.status("db").state is State.HALF_OPEN
    log = _new_events(brama, seen)
    assert _shape(log) == [
        ("transition", "open", "half_open", 2),
        ("failure", None, None, 3),
        ("transition", "half_open", "open", 3),
    ]
    assert log[1].reason == "probe timeout"
    assert_log_explains_row(brama, "db")


def test_a_full_cycle_keeps_the_log_consistent(
    brama: Brama, assert_log_explains_row: LogCheck
) -> None:
    """unknown -> closed -> open -> half_open -> open -> half_open -> closed, checked each step."""
    with freeze_time(START) as frozen:
        brama.register("db", failure_threshold=2, expiry=10)
        steps: list[tuple[str, State, int]] = [
            ("failure", State.CLOSED, 1),
            ("success", State.CLOSED, 0),
            ("failure", State.CLOSED, 1),
            ("failure", State.OPEN, 2),
            ("wait", State.HALF_OPEN, 2),
            ("failure", State.OPEN, 3),
            ("wait", State.HALF_OPEN, 3),
            ("success", State.CLOSED, 0),
        ]
        for step, state, count in steps:
            if step == "wait":
                frozen.tick(timedelta(seconds=10))
            else:
                frozen.tick(timedelta(milliseconds=1))
                getattr(brama, step)("db")
            status = brama.status("db")
            assert (status.state, status.failure_count) == (state, count), step
            assert_log_explains_row(brama, "db")
    transitions = [
        (event.from_state, event.to_state)
        for event in brama.events("db")
        if event.kind == "transition"
    ]
    assert transitions == [
        (State.UNKNOWN, State.CLOSED),
        (State.CLOSED, State.OPEN),
        (State.OPEN, State.HALF_OPEN),
        (State.HALF_OPEN, State.OPEN),
        (State.OPEN, State.HALF_OPEN),
        (State.HALF_OPEN, State.CLOSED),
    ]


def test_a_report_returns_the_transition_it_caused(brama: Brama) -> None:
    """The caller whose report tripped (or closed) the circuit learns it from the call."""
    with freeze_time(datetime(2032, 5, 6, 7, 8, 9, 10, tzinfo=timezone.utc)) as frozen:
        brama.register("svc", failure_threshold=2, expiry=60)
        first = brama.failure("svc", reason="timeout")
        assert first is not None
        assert (first.from_state, first.to_state) == (State.UNKNOWN, State.CLOSED)
        tripped = brama.failure("svc")
        assert tripped is not None
        assert (tripped.from_state, tripped.to_state) == (State.CLOSED, State.OPEN)
        assert tripped.occurred_at == brama.status("svc").opened_at
        assert tripped.reason == "failure threshold reached"
        assert brama.failure("svc") is None, "a late result changes nothing"
        frozen.tick(60)
        closed = brama.success("svc")
        assert closed is not None, "the expiry it persisted first is not the report's doing"
        assert (closed.from_state, closed.to_state) == (State.HALF_OPEN, State.CLOSED)
        assert brama.success("svc") is None
