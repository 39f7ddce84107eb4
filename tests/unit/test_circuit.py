"""The pure state machine of brama_sql.circuit: every transition of issue 2's table, no I/O."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from brama_sql import circuit as machine
from brama_sql.circuit import (
    INITIAL,
    Cause,
    Circuit,
    Kind,
    Occurrence,
    Outcome,
    Settings,
    State,
)

START = datetime(2024, 3, 1, 12, 0, 0, tzinfo=timezone.utc)
"""When the circuits of these tests were last opened."""
NOW = START + timedelta(seconds=10)
"""When the step under test happens (before the expiry of :data:`SETTINGS` elapses)."""
MICROSECOND = timedelta(microseconds=1)
SETTINGS = Settings(failure_threshold=3, expiry=timedelta(seconds=60))
EXPIRES_AT = START + SETTINGS.expiry

# A compact way to write the events a step must log: (kind, failure_count, from, to).
Expected = tuple[Kind, int, State | None, State | None]


def _summary(occurrences: tuple[Occurrence, ...]) -> list[Expected]:
    """The kind, failure count and states of each occurrence, in log order."""
    return [(o.kind, o.failure_count, o.from_state, o.to_state) for o in occurrences]


def _row(circuit: Circuit) -> tuple[State, int, datetime | None]:
    """What the connection row stores of a circuit: state, failure_count, opened_at.

    Compared instead of the whole dataclass so that fields added by later issues (such as a
    probe episode) do not change what these tests of the core transitions check.
    """
    return (circuit.state, circuit.failure_count, circuit.opened_at)


def _logged(occurrence: Occurrence) -> tuple[object, ...]:
    """The columns of brama_events an occurrence fills."""
    o = occurrence
    return (o.kind, o.occurred_at, o.failure_count, o.from_state, o.to_state, o.reason, o.cause)


# -- reports ----------------------------------------------------------------------------------

REPORT_CASES = [
    pytest.param(
        Circuit(State.UNKNOWN),
        Kind.SUCCESS,
        Circuit(State.CLOSED),
        [(Kind.SUCCESS, 0, None, None), (Kind.TRANSITION, 0, State.UNKNOWN, State.CLOSED)],
        id="unknown+success->closed",
    ),
    pytest.param(
        Circuit(State.UNKNOWN),
        Kind.FAILURE,
        Circuit(State.CLOSED, 1),
        [(Kind.FAILURE, 1, None, None), (Kind.TRANSITION, 1, State.UNKNOWN, State.CLOSED)],
        id="unknown+failure-below-threshold->closed",
    ),
    pytest.param(
        Circuit(State.UNKNOWN, 2),
        Kind.FAILURE,
        Circuit(State.OPEN, 3, NOW),
        [(Kind.FAILURE, 3, None, None), (Kind.TRANSITION, 3, State.UNKNOWN, State.OPEN)],
        id="unknown+failure-reaching-threshold->open",
    ),
    pytest.param(
        Circuit(State.CLOSED, 2),
        Kind.SUCCESS,
        Circuit(State.CLOSED, 0),
        [(Kind.SUCCESS, 0, None, None)],
        id="closed+success->closed-count-zeroed",
    ),
    pytest.param(
        Circuit(State.CLOSED, 1),
        Kind.FAILURE,
        Circuit(State.CLOSED, 2),
        [(Kind.FAILURE, 2, None, None)],
        id="closed+failure-below-threshold->closed",
    ),
    pytest.param(
        Circuit(State.CLOSED, 2),
        Kind.FAILURE,
        Circuit(State.OPEN, 3, NOW),
        [(Kind.FAILURE, 3, None, None), (Kind.TRANSITION, 3, State.CLOSED, State.OPEN)],
        id="closed+failure-reaching-threshold->open",
    ),
    pytest.param(
        Circuit(State.CLOSED, 7),
        Kind.FAILURE,
        Circuit(State.OPEN, 8, NOW),
        [(Kind.FAILURE, 8, None, None), (Kind.TRANSITION, 8, State.CLOSED, State.OPEN)],
        id="closed+failure-above-threshold->open",
    ),
    pytest.param(
        Circuit(State.OPEN, 3, START),
        Kind.SUCCESS,
        Circuit(State.OPEN, 0, START),
        [(Kind.SUCCESS, 0, None, None)],
        id="open+late-success-counted-state-and-opened_at-kept",
    ),
    pytest.param(
        Circuit(State.OPEN, 3, START),
        Kind.FAILURE,
        Circuit(State.OPEN, 4, START),
        [(Kind.FAILURE, 4, None, None)],
        id="open+late-failure-counted-state-and-opened_at-kept",
    ),
    pytest.param(
        Circuit(State.HALF_OPEN, 3, START),
        Kind.SUCCESS,
        Circuit(State.CLOSED, 0, START),
        [(Kind.SUCCESS, 0, None, None), (Kind.TRANSITION, 0, State.HALF_OPEN, State.CLOSED)],
        id="half_open+success->closed",
    ),
    pytest.param(
        Circuit(State.HALF_OPEN, 3, START),
        Kind.FAILURE,
        Circuit(State.OPEN, 4, NOW),
        [(Kind.FAILURE, 4, None, None), (Kind.TRANSITION, 4, State.HALF_OPEN, State.OPEN)],
        id="half_open+failure->reopened-at-now",
    ),
]


@pytest.mark.parametrize(("before", "kind", "after", "expected"), REPORT_CASES)
def test_report_transitions(
    before: Circuit, kind: Kind, after: Circuit, expected: list[Expected]
) -> None:
    """Each report moves the circuit as the spec's table says and logs the report, then the move."""
    outcome = machine.record(before, SETTINGS, kind, NOW, "why")

    assert _row(outcome.circuit) == _row(after)
    assert _summary(outcome.occurrences) == expected
    assert all(o.occurred_at == NOW for o in outcome.occurrences)
    report = outcome.occurrences[0]
    assert report.reason == "why"
    assert report.cause is None
    for transition in outcome.occurrences[1:]:
        assert transition.cause is Cause.REPORT
        assert transition.reason  # a report-caused transition always says why


@pytest.mark.parametrize(
    ("threshold", "failures_before", "opens"),
    [(1, 0, True), (2, 0, False), (2, 1, True), (5, 3, False), (5, 4, True), (5, 9, True)],
)
def test_threshold_is_reached_with_greater_or_equal(
    threshold: int, failures_before: int, opens: bool
) -> None:
    """A failure opens a closed circuit exactly when the new count is >= failure_threshold."""
    settings = Settings(failure_threshold=threshold, expiry=SETTINGS.expiry)
    outcome = machine.record(Circuit(State.CLOSED, failures_before), settings, Kind.FAILURE, NOW)

    assert outcome.circuit.failure_count == failures_before + 1
    assert outcome.circuit.state is (State.OPEN if opens else State.CLOSED)
    assert outcome.circuit.opened_at == (NOW if opens else None)


def test_threshold_of_one_opens_an_unknown_circuit_in_one_transition() -> None:
    """With failure_threshold=1 the first failure goes straight from unknown to open."""
    settings = Settings(failure_threshold=1, expiry=SETTINGS.expiry)
    outcome = machine.record(INITIAL, settings, Kind.FAILURE, NOW)

    assert _row(outcome.circuit) == (State.OPEN, 1, NOW)
    assert _summary(outcome.occurrences) == [
        (Kind.FAILURE, 1, None, None),
        (Kind.TRANSITION, 1, State.UNKNOWN, State.OPEN),
    ]


def test_report_is_logged_before_the_transition_it_causes() -> None:
    """Causal order: the report first, then the transition."""
    outcome = machine.record(Circuit(State.CLOSED, 2), SETTINGS, Kind.FAILURE, NOW)

    kinds = [o.kind for o in outcome.occurrences]
    assert kinds == [Kind.FAILURE, Kind.TRANSITION]


def test_late_report_keeps_opened_at_so_the_expiry_does_not_restart() -> None:
    """Late failures while open do not push the expiry back."""
    opened = Circuit(State.OPEN, 3, START)
    late = machine.record(opened, SETTINGS, Kind.FAILURE, EXPIRES_AT - MICROSECOND).circuit

    assert late.opened_at == START
    assert late.expires_at(SETTINGS) == EXPIRES_AT


def test_record_refuses_a_kind_that_is_not_a_report() -> None:
    """Only success and failure are reports."""
    with pytest.raises(ValueError, match="not a report"):
        machine.record(INITIAL, SETTINGS, Kind.TRANSITION, NOW)


# -- lazy expiry -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "circuit",
    [
        INITIAL,
        Circuit(State.CLOSED, 2),
        Circuit(State.HALF_OPEN, 3, START),
        Circuit(State.CLOSED, 0, START),  # closed by hand after being open: opened_at is kept
    ],
    ids=["unknown", "closed", "half_open", "closed-with-opened_at"],
)
def test_only_an_open_circuit_expires(circuit: Circuit) -> None:
    """expire() is a no-op in every state but open, however late it is."""
    much_later = EXPIRES_AT + timedelta(days=365)

    assert circuit.expires_at(SETTINGS) is None
    assert machine.expire(circuit, SETTINGS, much_later) == Outcome(circuit)
    assert machine.current(circuit, SETTINGS, much_later) == circuit


def test_open_circuit_does_not_expire_one_microsecond_early() -> None:
    """At opened_at + expiry - 1µs the circuit is still open and nothing is logged."""
    opened = Circuit(State.OPEN, 3, START)

    outcome = machine.expire(opened, SETTINGS, EXPIRES_AT - MICROSECOND)

    assert outcome == Outcome(opened)
    assert machine.current(opened, SETTINGS, EXPIRES_AT - MICROSECOND).state is State.OPEN


@pytest.mark.parametrize(
    "now",
    [EXPIRES_AT, EXPIRES_AT + MICROSECOND, EXPIRES_AT + timedelta(hours=5)],
    ids=["exactly-at-expiry", "one-microsecond-after", "hours-after"],
)
def test_open_circuit_expires_to_half_open_dated_at_the_expiry_instant(now: datetime) -> None:
    """From opened_at + expiry on: one open -> half_open transition dated at that instant."""
    opened = Circuit(State.OPEN, 4, START)

    outcome = machine.expire(opened, SETTINGS, now)

    assert _row(outcome.circuit) == (State.HALF_OPEN, 4, START)
    assert machine.current(opened, SETTINGS, now) == outcome.circuit
    (event,) = outcome.occurrences
    assert _logged(event) == (
        Kind.TRANSITION,
        EXPIRES_AT,
        4,
        State.OPEN,
        State.HALF_OPEN,
        event.reason,
        Cause.EXPIRY,
    )
    assert event.reason


def test_expires_at_is_none_for_an_open_circuit_without_opened_at() -> None:
    """A malformed open circuit without opened_at never expires (and does not crash)."""
    assert Circuit(State.OPEN, 3, None).expires_at(SETTINGS) is None


def test_due_expiry_is_logged_before_the_report_that_follows() -> None:
    """The storage recipe expire(...).then(step): expiry transition, report, its transition."""
    opened = Circuit(State.OPEN, 3, START)
    now = EXPIRES_AT + timedelta(seconds=30)

    outcome = machine.expire(opened, SETTINGS, now).then(
        lambda circuit: machine.record(circuit, SETTINGS, Kind.SUCCESS, now)
    )

    assert _row(outcome.circuit) == (State.CLOSED, 0, START)
    assert _summary(outcome.occurrences) == [
        (Kind.TRANSITION, 3, State.OPEN, State.HALF_OPEN),
        (Kind.SUCCESS, 0, None, None),
        (Kind.TRANSITION, 0, State.HALF_OPEN, State.CLOSED),
    ]
    assert [o.occurred_at for o in outcome.occurrences] == [EXPIRES_AT, now, now]


def test_half_open_failure_restarts_the_expiry_from_now() -> None:
    """After a failed probe the next expiry is counted from the probe, not from the old opening."""
    probe_time = EXPIRES_AT + timedelta(seconds=5)
    half_open = Circuit(State.HALF_OPEN, 3, START)

    reopened = machine.record(half_open, SETTINGS, Kind.FAILURE, probe_time).circuit

    assert reopened.opened_at == probe_time
    assert reopened.expires_at(SETTINGS) == probe_time + SETTINGS.expiry
    still_open = machine.current(reopened, SETTINGS, probe_time + SETTINGS.expiry - MICROSECOND)
    assert still_open.state is State.OPEN


# -- manual actions --------------------------------------------------------------------------

STATES_BEFORE_MANUAL = {
    "unknown": Circuit(State.UNKNOWN, 0),
    "closed": Circuit(State.CLOSED, 2),
    "closed-after-open": Circuit(State.CLOSED, 1, START),
    "open": Circuit(State.OPEN, 3, START),
    "half_open": Circuit(State.HALF_OPEN, 3, START),
}
MANUAL_CASES = [
    (Cause.MANUAL_OPEN, State.OPEN, "manual open"),
    (Cause.MANUAL_CLOSE, State.CLOSED, "manual close"),
    (Cause.MANUAL_RESET, State.CLOSED, "manual reset"),
]


@pytest.mark.parametrize(
    "before", list(STATES_BEFORE_MANUAL.values()), ids=list(STATES_BEFORE_MANUAL)
)
@pytest.mark.parametrize(
    ("action", "target", "default_reason"), MANUAL_CASES, ids=[c[2] for c in MANUAL_CASES]
)
def test_manual_action_from_every_state_writes_exactly_one_transition(
    before: Circuit, action: Cause, target: State, default_reason: str
) -> None:
    """open/close/reset force their state, always with one transition event (no-ops included)."""
    outcome = machine.force(before, action, NOW)

    if target is State.OPEN:
        expected = (State.OPEN, before.failure_count, NOW)
    else:
        expected = (State.CLOSED, 0, before.opened_at)
    assert _row(outcome.circuit) == expected
    assert [_logged(o) for o in outcome.occurrences] == [
        (Kind.TRANSITION, NOW, expected[1], before.state, target, default_reason, action)
    ]


@pytest.mark.parametrize(("action", "target", "default_reason"), MANUAL_CASES)
def test_manual_action_keeps_a_custom_reason(
    action: Cause, target: State, default_reason: str
) -> None:
    """A reason given by the operator replaces the default one."""
    outcome = machine.force(Circuit(State.CLOSED, 1), action, NOW, "deploy of v2.3")

    (event,) = outcome.occurrences
    assert event.reason == "deploy of v2.3"
    assert event.reason != default_reason
    assert event.to_state is target


@pytest.mark.parametrize(
    ("action", "count_after"),
    [(Cause.MANUAL_OPEN, 4), (Cause.MANUAL_CLOSE, 0), (Cause.MANUAL_RESET, 0)],
)
def test_close_and_reset_zero_the_count_open_keeps_it(action: Cause, count_after: int) -> None:
    """failure_count after a manual action on a circuit with 4 consecutive failures."""
    outcome = machine.force(Circuit(State.CLOSED, 4), action, NOW)

    assert outcome.circuit.failure_count == count_after
    assert outcome.occurrences[0].failure_count == count_after


def test_manual_open_of_an_open_circuit_restarts_its_expiry() -> None:
    """opened_at always means when the circuit was last opened, by hand included."""
    opened = Circuit(State.OPEN, 3, START)

    again = machine.force(opened, Cause.MANUAL_OPEN, NOW).circuit

    assert again.opened_at == NOW
    assert again.expires_at(SETTINGS) == NOW + SETTINGS.expiry


@pytest.mark.parametrize("action", [Cause.REPORT, Cause.EXPIRY])
def test_force_refuses_a_cause_that_is_not_manual(action: Cause) -> None:
    """Only the three manual actions can be forced."""
    with pytest.raises(ValueError, match="not a manual action"):
        machine.force(INITIAL, action, NOW)


# -- small pieces ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "available"),
    [
        (State.UNKNOWN, True),
        (State.CLOSED, True),
        (State.HALF_OPEN, True),
        (State.OPEN, False),
    ],
)
def test_is_available_in_every_state_but_open(state: State, available: bool) -> None:
    """Calls go through in unknown, closed and half_open."""
    assert machine.is_available(state) is available


@pytest.mark.parametrize(
    ("state", "value"),
    [
        (State.UNKNOWN, "unknown"),
        (State.CLOSED, "closed"),
        (State.OPEN, "open"),
        (State.HALF_OPEN, "half_open"),
    ],
)
def test_state_is_a_str_enum_equal_to_its_value(state: State, value: str) -> None:
    """State compares equal to, formats as and parses from its string value."""
    assert isinstance(state, str)
    assert state == value
    assert str(state) == value
    assert f"{state}" == value
    assert State(value) is state


def test_state_has_exactly_the_six_states_of_the_spec() -> None:
    """No state beyond unknown, closed, open, half_open and the forced ones (issue 9)."""
    assert {s.value for s in State} == {
        "unknown",
        "closed",
        "open",
        "half_open",
        "disabled",
        "forced_open",
    }


def test_a_registered_connection_starts_unknown_with_nothing_counted() -> None:
    """INITIAL is the circuit of a freshly registered connection."""
    assert (INITIAL.state, INITIAL.failure_count, INITIAL.opened_at) == (State.UNKNOWN, 0, None)
    assert machine.is_available(INITIAL.state)


def test_then_applies_the_step_to_the_new_circuit_and_concatenates_events() -> None:
    """Outcome.then chains steps and keeps the events oldest first."""
    first = machine.record(INITIAL, SETTINGS, Kind.SUCCESS, START)

    chained = first.then(lambda c: machine.force(c, Cause.MANUAL_OPEN, NOW, "by hand"))

    assert _row(chained.circuit) == (State.OPEN, 0, NOW)
    assert chained.occurrences[: len(first.occurrences)] == first.occurrences
    assert [o.kind for o in chained.occurrences] == [
        Kind.SUCCESS,
        Kind.TRANSITION,
        Kind.TRANSITION,
    ]
    assert chained.occurrences[-1].reason == "by hand"
