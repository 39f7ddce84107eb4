"""Manual open(), close() and reset() from every state: one transition event each, always."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from freezegun import freeze_time

from brama_sql import Brama, Cause, Kind, State

START = datetime(2024, 3, 1, 12, 34, 56, 789012, tzinfo=timezone.utc)
EXPIRY = 30.0
LogCheck = Callable[..., Any]

ACTIONS: dict[str, tuple[Cause, State, str]] = {
    "open": (Cause.MANUAL_OPEN, State.OPEN, "manual open"),
    "close": (Cause.MANUAL_CLOSE, State.CLOSED, "manual close"),
    "reset": (Cause.MANUAL_RESET, State.CLOSED, "manual reset"),
}
"""Each manual call: its cause, the state it forces and its default reason."""


def _bring_to(brama: Brama, state: State, frozen: Any) -> datetime:
    """Register ``db`` (threshold 2) at START and bring it to ``state``; return the time now."""
    brama.register("db", failure_threshold=2, expiry=EXPIRY)
    if state is State.CLOSED:
        brama.failure("db")
    elif state in (State.OPEN, State.HALF_OPEN):
        brama.failure("db")
        brama.failure("db")
    wait = EXPIRY + 15 if state is State.HALF_OPEN else 10
    frozen.move_to(START + timedelta(seconds=wait))
    assert brama.status("db").state is state
    return START + timedelta(seconds=wait)


@pytest.mark.parametrize("custom_reason", [False, True], ids=["default-reason", "custom-reason"])
@pytest.mark.parametrize("action", sorted(ACTIONS))
@pytest.mark.parametrize(
    "start_state",
    [State.UNKNOWN, State.CLOSED, State.OPEN, State.HALF_OPEN],
    ids=lambda state: state.value,
)
def test_manual_action_from_each_state(
    brama: Brama,
    start_state: State,
    action: str,
    custom_reason: bool,
    assert_log_explains_row: LogCheck,
) -> None:
    cause, target, default_reason = ACTIONS[action]
    reason = f"operator {action} ticket #42" if custom_reason else None
    with freeze_time(START) as frozen:
        now = _bring_to(brama, start_state, frozen)
        before = brama.status("db")
        seen = len(brama.events("db"))

        getattr(brama, action)("db", reason=reason)

        after = brama.status("db")
        assert after.state is target
        assert brama.available("db") is (target is not State.OPEN)
        assert after.state_changed_at == now
        if target is State.OPEN:
            assert after.opened_at == now
        else:
            assert after.failure_count == 0
            assert after.opened_at == before.opened_at  # when it was last opened, if ever
        assert (after.total_successes, after.total_failures) == (
            before.total_successes,
            before.total_failures,
        )

    new = brama.events("db")[seen:]
    if start_state is State.HALF_OPEN:
        expiry_event, *new = new
        assert expiry_event.cause is Cause.EXPIRY
    [transition] = new
    assert transition.kind is Kind.TRANSITION
    assert transition.cause is cause
    assert transition.from_state is start_state
    assert transition.to_state is target
    assert transition.reason == (reason or default_reason)
    assert transition.occurred_at == now
    assert transition.failure_count == after.failure_count
    assert_log_explains_row(brama, "db")


@pytest.mark.parametrize("action", sorted(ACTIONS))
def test_repeated_manual_calls_each_log_a_transition(
    brama: Brama, action: str, assert_log_explains_row: LogCheck
) -> None:
    cause, target, _ = ACTIONS[action]
    brama.register("db")
    for _ in range(3):
        getattr(brama, action)("db")
    transitions = [e for e in brama.events("db") if e.kind is Kind.TRANSITION]
    assert [(e.from_state, e.to_state, e.cause) for e in transitions] == [
        (State.UNKNOWN, target, cause),
        (target, target, cause),
        (target, target, cause),
    ]
    assert brama.status("db").state is target
    assert_log_explains_row(brama, "db")


def test_manual_open_restarts_the_expiry(brama: Brama, assert_log_explains_row: LogCheck) -> None:
    with freeze_time(START) as frozen:
        brama.register("db", expiry=EXPIRY)
        brama.open("db")
        assert brama.status("db").opened_at == START
        frozen.move_to(START + timedelta(seconds=20))
        brama.open("db", reason="still broken")
        assert brama.status("db").opened_at == START + timedelta(seconds=20)
        frozen.move_to(START + timedelta(seconds=EXPIRY + 5))
        assert brama.status("db").state is State.OPEN
        frozen.move_to(START + timedelta(seconds=20 + EXPIRY))
        assert brama.status("db").state is State.HALF_OPEN
    assert_log_explains_row(brama, "db")


@pytest.mark.parametrize("action", ["close", "reset"])
def test_close_and_reset_zero_the_count_so_the_threshold_counts_afresh(
    brama: Brama, action: str, assert_log_explains_row: LogCheck
) -> None:
    brama.register("db", failure_threshold=3)
    brama.failure("db")
    brama.failure("db")
    assert brama.status("db").failure_count == 2
    getattr(brama, action)("db")
    assert brama.status("db").failure_count == 0
    brama.failure("db")
    brama.failure("db")
    status = brama.status("db")
    assert status.state is State.CLOSED
    assert status.failure_count == 2
    brama.failure("db")
    assert brama.status("db").state is State.OPEN
    assert_log_explains_row(brama, "db")


def test_manual_calls_respect_scope(brama: Brama, assert_log_explains_row: LogCheck) -> None:
    brama.register("db")
    brama.register("db", scope="eu")
    brama.open("db", scope="eu")
    assert brama.status("db", scope="eu").state is State.OPEN
    assert brama.status("db").state is State.UNKNOWN
    brama.close("db")
    assert brama.status("db").state is State.CLOSED
    assert brama.status("db", scope="eu").state is State.OPEN
    assert_log_explains_row(brama, "db")
    assert_log_explains_row(brama, "db", "eu")
