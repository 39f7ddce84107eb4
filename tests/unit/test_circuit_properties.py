"""Property tests of the state machine: random histories applied the way brama_sql.store does
(``machine.expire(...).then(step)`` under the row lock) keep the invariants and replay exactly."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from brama_sql import circuit as machine
from brama_sql.circuit import INITIAL, Cause, Circuit, Kind, Occurrence, Outcome, Settings, State
from brama_sql.records import Event
from brama_sql.replay import replay

START = datetime(2024, 3, 1, 12, 0, 0, tzinfo=timezone.utc)
MICROSECOND = timedelta(microseconds=1)
REPORTS = {
    "success": Kind.SUCCESS,
    "failure": Kind.FAILURE,
    "permitted success": Kind.SUCCESS,
    "permitted failure": Kind.FAILURE,
}
"""Reports; a "permitted" one comes from a caller that holds a half-open probe permit."""
MANUALS = {"open": Cause.MANUAL_OPEN, "close": Cause.MANUAL_CLOSE, "reset": Cause.MANUAL_RESET}

Operation = str | timedelta
"""A call name (a report or a manual action) or an advance of the clock."""


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[Settings, list[Operation]]:
    """Connection settings and a history of calls and clock advances.

    The clock advances include the expiry itself and one microsecond less, so histories land
    exactly on (and just before) the instant an open circuit expires.
    """
    expiry = timedelta(seconds=draw(st.integers(1, 90)), microseconds=draw(st.integers(0, 999)))
    connection = Settings(
        failure_threshold=draw(st.integers(1, 4)),
        expiry=expiry,
        half_open_max_calls=draw(st.sampled_from([None, None, 1, 2])),
    )
    advances = st.one_of(
        st.sampled_from([expiry, expiry - MICROSECOND, MICROSECOND, timedelta(0)]),
        st.integers(0, 2 * expiry // MICROSECOND).map(lambda n: n * MICROSECOND),
    )
    # Failures are drawn more often than the other calls, so circuits trip and expire often.
    calls = st.sampled_from([*REPORTS, *MANUALS, "failure", "failure", "permitted failure"])
    operations = draw(st.lists(st.one_of(calls, calls, advances), min_size=10, max_size=80))
    return connection, operations


@dataclass
class History:
    """What applying a scenario produced: the final circuit, the log and what changed."""

    circuit: Circuit = INITIAL
    now: datetime = START
    log: list[Occurrence] = field(default_factory=list)
    state_changes: int = 0
    manual_no_ops: int = 0


def _step(name: str, now: datetime, connection: Settings) -> Callable[[Circuit], Outcome]:
    """The state-machine step of one call, as brama.Brama hands it to the store."""
    if name in REPORTS:
        holds_permit = name.startswith("permitted")
        return lambda circuit: machine.record(
            circuit, connection, REPORTS[name], now, name, holds_permit
        )
    return lambda circuit: machine.force(circuit, MANUALS[name], now, None)


def _apply(history: History, name: str, connection: Settings) -> None:
    """One locked change: a due expiry first, then the call; check the per-step invariants."""
    before, now = history.circuit, history.now
    middle: list[Circuit] = []
    step = _step(name, now, connection)

    def recorded_step(circuit: Circuit) -> Outcome:
        middle.append(circuit)
        return step(circuit)

    outcome = machine.expire(before, connection, now).then(recorded_step)
    (expired,) = middle
    after = outcome.circuit

    history.state_changes += (expired.state != before.state) + (after.state != expired.state)
    if name in MANUALS and after.state == expired.state:
        history.manual_no_ops += 1
    if name in REPORTS and expired.state is State.OPEN:
        # A late report: counted, but neither the state nor the timer moves.
        assert after.state is State.OPEN
        assert after.opened_at == expired.opened_at
    probing = not connection.permits_limited or name.startswith("permitted")
    if name in REPORTS and expired.state is State.HALF_OPEN and not probing:
        # Without a permit, a half-open report is a late result too: it decides nothing.
        assert after.state is State.HALF_OPEN
    assert outcome.occurrences, "every call writes at least one event"
    assert outcome.occurrences[-1].failure_count == after.failure_count
    assert all(o.occurred_at <= now for o in outcome.occurrences)
    history.log.extend(outcome.occurrences)
    history.circuit = after


def _run(connection: Settings, operations: list[Operation]) -> History:
    """Apply every operation in turn, checking the invariants after each one."""
    history = History()
    for operation in operations:
        if isinstance(operation, timedelta):
            history.now += operation
        else:
            _apply(history, operation, connection)
        assert history.circuit.failure_count >= 0
        if history.circuit.state is State.OPEN:
            assert history.circuit.opened_at is not None
            assert history.circuit.opened_at <= history.now
    return history


def _events(log: list[Occurrence]) -> list[Event]:
    """The log as the storage would return it: a ``registered`` event, then increasing ids.

    Like the storage, every column the occurrence has is copied into the event.
    """
    registered = Occurrence(Kind.REGISTERED, START, 0)
    columns = [f.name for f in fields(Event) if f.name in {g.name for g in fields(Occurrence)}]
    return [
        Event(
            id=number,
            identifier="payments-api",
            scope=None,
            **{name: getattr(occurrence, name) for name in columns},
        )
        for number, occurrence in enumerate([registered, *log], start=1)
    ]


HISTORIES = settings(max_examples=300, deadline=None)


@HISTORIES
@given(scenarios())
def test_invariants_hold_after_every_step(scenario: tuple[Settings, list[Operation]]) -> None:
    """failure_count >= 0 and an open circuit has opened_at, after every call (see _run)."""
    connection, operations = scenario

    history = _run(connection, operations)

    assert history.circuit.failure_count >= 0
    if history.circuit.state is State.OPEN:
        assert history.circuit.opened_at is not None


@HISTORIES
@given(scenarios())
def test_transitions_form_a_chain_from_unknown(scenario: tuple[Settings, list[Operation]]) -> None:
    """Each transition starts where the previous one ended; the last ends in the final state."""
    connection, operations = scenario

    history = _run(connection, operations)

    state = State.UNKNOWN
    for occurrence in history.log:
        if occurrence.kind is Kind.TRANSITION:
            assert occurrence.from_state is state
            assert occurrence.to_state is not None
            if occurrence.cause not in machine.MANUAL_ACTIONS:
                assert occurrence.to_state is not occurrence.from_state
            state = occurrence.to_state
        else:
            assert occurrence.from_state is None
            assert occurrence.to_state is None
    assert state is history.circuit.state


@HISTORIES
@given(scenarios())
def test_one_transition_per_state_change_and_per_manual_no_op(
    scenario: tuple[Settings, list[Operation]],
) -> None:
    """Transitions = state changes + manual actions that left the state as it was."""
    connection, operations = scenario

    history = _run(connection, operations)

    transitions = [o for o in history.log if o.kind is Kind.TRANSITION]
    assert len(transitions) == history.state_changes + history.manual_no_ops
    manual = [o for o in transitions if o.cause in machine.MANUAL_ACTIONS]
    assert len(manual) == sum(1 for op in operations if isinstance(op, str) and op in MANUALS)


@HISTORIES
@given(scenarios())
def test_log_is_in_time_order(scenario: tuple[Settings, list[Operation]]) -> None:
    """Events are written oldest first, expiry transitions dated back included."""
    connection, operations = scenario

    history = _run(connection, operations)

    times = [o.occurred_at for o in history.log]
    assert times == sorted(times)


@HISTORIES
@given(scenarios())
def test_replay_of_the_log_reproduces_the_circuit(
    scenario: tuple[Settings, list[Operation]],
) -> None:
    """brama_sql.replay explains the final state, failure_count and opened_at from the log."""
    connection, operations = scenario

    history = _run(connection, operations)

    assert replay(_events(history.log), connection) == history.circuit
