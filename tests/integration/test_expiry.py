"""The lazy open -> half_open expiry: exact to the microsecond, read without writing, persisted
once by the first write and dated at the instant the expiry elapsed."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from freezegun import freeze_time

from brama_sql import Brama, Cause, Kind, State
from brama_sql.circuit import Settings

START = datetime(2024, 3, 1, 12, 34, 56, 789012, tzinfo=timezone.utc)
EXPIRY = 30.0
EXPIRES_AT = START + timedelta(seconds=EXPIRY)
LATER = START + timedelta(seconds=45)
LogCheck = Callable[..., Any]
RowCounts = Callable[[Brama], tuple[int, int]]
RowReader = Callable[..., "dict[str, Any] | None"]


def _trip(brama: Brama, identifier: str = "db", expiry: float | timedelta = EXPIRY) -> None:
    """Register a connection with threshold 2 and trip it at the current (frozen) time."""
    brama.register(identifier, failure_threshold=2, expiry=expiry)
    brama.failure(identifier)
    brama.failure(identifier)
    assert brama.status(identifier).state is State.OPEN


@pytest.mark.parametrize(
    "expiry",
    [EXPIRY, 0.25, timedelta(seconds=1, microseconds=1)],
    ids=["30s", "250ms", "1s+1us"],
)
def test_half_open_from_exactly_opened_at_plus_expiry(
    brama: Brama, expiry: float | timedelta, row_counts: RowCounts
) -> None:
    due = START + (expiry if isinstance(expiry, timedelta) else timedelta(seconds=expiry))
    with freeze_time(START) as frozen:
        _trip(brama, expiry=expiry)
        frozen.move_to(due - timedelta(microseconds=1))
        before = brama.status("db")
        assert before.state is State.OPEN
        assert before.state_changed_at == START
        assert brama.available("db") is False

        frozen.move_to(due)
        at = brama.status("db")
        assert at.state is State.HALF_OPEN
        assert at.available is True
        assert brama.available("db") is True
        assert at.opened_at == START
        assert at.failure_count == 2
        assert at.state_changed_at == due
        assert at.time_since_state_change == 0.0
        counts = row_counts(brama)
        frozen.tick(timedelta(seconds=2))
        assert brama.status("db").time_since_state_change == 2.0
        assert row_counts(brama) == counts


def test_reads_never_write_the_expiry(
    brama: Brama, row_counts: RowCounts, connection_row: RowReader
) -> None:
    with freeze_time(START) as frozen:
        _trip(brama)
        frozen.move_to(LATER)
        counts = row_counts(brama)
        for _ in range(3):
            assert brama.status("db").state is State.HALF_OPEN
            assert brama.available("db") is True
            [listed] = brama.connections()
            assert listed.state is State.HALF_OPEN
            assert listed.state_changed_at == EXPIRES_AT
            assert all(event.to_state != State.HALF_OPEN for event in brama.events())
            frozen.tick(timedelta(seconds=1))
        assert row_counts(brama) == counts
        row = connection_row(brama, "db", None)
        assert row is not None
        assert row["state"] == "open"
        assert row["opened_at"] == START


def test_state_changed_at_is_the_expiry_instant_before_persisting(brama: Brama) -> None:
    with freeze_time(START) as frozen:
        _trip(brama)
        frozen.move_to(LATER)
        status = brama.status("db")
    assert status.state_changed_at == EXPIRES_AT
    assert status.time_since_state_change == 15.0


WRITES: dict[str, Callable[[Brama], Any]] = {
    "success": lambda brama: brama.success("db"),
    "failure": lambda brama: brama.failure("db"),
    "open": lambda brama: brama.open("db"),
    "close": lambda brama: brama.close("db"),
    "reset": lambda brama: brama.reset("db"),
    "unregister": lambda brama: brama.unregister("db"),
    "cleanup": lambda brama: brama.cleanup(),
}
"""Every call that writes for a connection; each must first persist a due expiry."""

OWN_EVENTS: dict[str, list[tuple[Kind, State | None, State | None]]] = {
    "success": [
        (Kind.SUCCESS, None, None),
        (Kind.TRANSITION, State.HALF_OPEN, State.CLOSED),
    ],
    "failure": [
        (Kind.FAILURE, None, None),
        (Kind.TRANSITION, State.HALF_OPEN, State.OPEN),
    ],
    "open": [(Kind.TRANSITION, State.HALF_OPEN, State.OPEN)],
    "close": [(Kind.TRANSITION, State.HALF_OPEN, State.CLOSED)],
    "reset": [(Kind.TRANSITION, State.HALF_OPEN, State.CLOSED)],
    "unregister": [(Kind.UNREGISTERED, None, None)],
    "cleanup": [(Kind.REMOVED, None, None)],
}


@pytest.mark.parametrize("write", sorted(WRITES))
def test_first_write_persists_one_expiry_event_before_its_own(
    make_brama: Callable[..., Brama], write: str, assert_log_explains_row: LogCheck
) -> None:
    brama = make_brama(inactive_after=10)
    with freeze_time(START) as frozen:
        _trip(brama)
        frozen.move_to(LATER)
        for _ in range(3):
            assert brama.status("db").state is State.HALF_OPEN
        seen = len(brama.events("db"))
        WRITES[write](brama)
        new = brama.events("db")[seen:]
        expiry_event, *own = new
        assert expiry_event.kind is Kind.TRANSITION
        assert expiry_event.cause is Cause.EXPIRY
        assert (expiry_event.from_state, expiry_event.to_state) == (State.OPEN, State.HALF_OPEN)
        assert expiry_event.occurred_at == EXPIRES_AT
        assert expiry_event.failure_count == 2
        assert [(e.kind, e.from_state, e.to_state) for e in own] == OWN_EVENTS[write]
        assert all(e.occurred_at == LATER for e in own)
        assert all(e.id > expiry_event.id for e in own)
        half_open_events = [e for e in brama.events("db") if e.to_state is State.HALF_OPEN]
        assert half_open_events == [expiry_event]
        if write in ("unregister", "cleanup"):
            assert_log_explains_row(brama, "db", None, Settings(2, timedelta(seconds=EXPIRY)))
        else:
            assert brama.status("db").state_changed_at == LATER
            assert_log_explains_row(brama, "db")


def test_state_changed_at_is_the_expiry_instant_after_persisting(
    brama: Brama, connection_row: RowReader, assert_log_explains_row: LogCheck
) -> None:
    """The only write that persists the expiry and leaves the circuit half-open: a report from a
    caller without a probe permit when ``half_open_max_calls`` is set (a late result)."""
    with freeze_time(START) as frozen:
        brama.register("db", failure_threshold=2, expiry=EXPIRY, half_open_max_calls=1)
        brama.failure("db")
        brama.failure("db")
        frozen.move_to(LATER)
        before = brama.status("db")
        brama.success("db")  # no permit claimed: logged and counted, decides nothing
        after = brama.status("db")
        row = connection_row(brama, "db", None)
    assert row is not None
    assert row["state"] == "half_open"
    assert before.state is after.state is State.HALF_OPEN
    assert before.state_changed_at == after.state_changed_at == EXPIRES_AT
    assert before.time_since_state_change == after.time_since_state_change == 15.0
    expiry_events = [e for e in brama.events("db") if e.cause is Cause.EXPIRY]
    assert [e.occurred_at for e in expiry_events] == [EXPIRES_AT]
    assert_log_explains_row(brama, "db")


def test_expiry_is_persisted_once_however_late_the_write(
    brama: Brama, assert_log_explains_row: LogCheck
) -> None:
    with freeze_time(START) as frozen:
        _trip(brama)
        frozen.move_to(START + timedelta(seconds=EXPIRY * 10 + 0.5))
        brama.success("db")
        brama.success("db")
    expiry_events = [e for e in brama.events("db") if e.cause is Cause.EXPIRY]
    assert [e.occurred_at for e in expiry_events] == [EXPIRES_AT]
    assert_log_explains_row(brama, "db")


def test_no_expiry_event_when_the_write_comes_a_microsecond_early(
    brama: Brama, assert_log_explains_row: LogCheck
) -> None:
    with freeze_time(START) as frozen:
        _trip(brama)
        frozen.move_to(EXPIRES_AT - timedelta(microseconds=1))
        brama.success("db")
        status = brama.status("db")
        assert status.state is State.OPEN  # a late success: the circuit stays open
        assert status.opened_at == START
    assert not [e for e in brama.events("db") if e.cause is Cause.EXPIRY]
    assert_log_explains_row(brama, "db")


def test_write_at_the_exact_expiry_instant_persists_it(
    brama: Brama, assert_log_explains_row: LogCheck
) -> None:
    with freeze_time(START) as frozen:
        _trip(brama)
        frozen.move_to(EXPIRES_AT)
        brama.failure("db")
        status = brama.status("db")
        assert status.state is State.OPEN
        assert status.opened_at == EXPIRES_AT
        assert status.state_changed_at == EXPIRES_AT
    tail = brama.events("db")[-3:]
    assert [(e.kind, e.from_state, e.to_state) for e in tail] == [
        (Kind.TRANSITION, State.OPEN, State.HALF_OPEN),
        (Kind.FAILURE, None, None),
        (Kind.TRANSITION, State.HALF_OPEN, State.OPEN),
    ]
    assert all(e.occurred_at == EXPIRES_AT for e in tail)
    assert_log_explains_row(brama, "db")


def test_the_expiry_of_a_reopened_circuit_runs_from_the_new_opening(
    brama: Brama, assert_log_explains_row: LogCheck
) -> None:
    with freeze_time(START) as frozen:
        _trip(brama)
        frozen.move_to(LATER)
        brama.failure("db")  # the probe fails: open again at LATER
        frozen.move_to(LATER + timedelta(seconds=EXPIRY) - timedelta(microseconds=1))
        assert brama.status("db").state is State.OPEN
        frozen.move_to(LATER + timedelta(seconds=EXPIRY))
        status = brama.status("db")
        assert status.state is State.HALF_OPEN
        assert status.state_changed_at == LATER + timedelta(seconds=EXPIRY)
        brama.success("db")
    expiry_events = [e for e in brama.events("db") if e.cause is Cause.EXPIRY]
    assert [e.occurred_at for e in expiry_events] == [
        EXPIRES_AT,
        LATER + timedelta(seconds=EXPIRY),
    ]
    assert_log_explains_row(brama, "db")


def test_a_pending_expiry_counts_as_activity_for_cleanup(
    make_brama: Callable[..., Brama], row_counts: RowCounts
) -> None:
    """Open at START, half-open at START+30: idle since START+30, not since START."""
    brama = make_brama(inactive_after=100)
    with freeze_time(START) as frozen:
        _trip(brama)
        frozen.move_to(START + timedelta(seconds=129))  # 129 s after the last event
        counts = row_counts(brama)
        assert brama.cleanup() == 0
        assert row_counts(brama) == counts
        assert brama.status("db").state is State.HALF_OPEN
        frozen.move_to(START + timedelta(seconds=131))  # 101 s after the expiry
        assert brama.cleanup() == 1
        assert brama.connections() == []
    tail = brama.events("db")[-2:]
    assert [(e.kind, e.cause) for e in tail] == [
        (Kind.TRANSITION, Cause.EXPIRY),
        (Kind.REMOVED, None),
    ]
    assert tail[0].occurred_at == EXPIRES_AT
    assert tail[1].occurred_at == START + timedelta(seconds=131)
