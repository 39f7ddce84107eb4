"""``circuit.state_at``, the state ``available()`` decides on from a few columns, is the state
of ``circuit.current`` for every stored circuit, settings and instant."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from brama_sql import circuit as machine
from brama_sql.circuit import Circuit, Settings, State

START = datetime(2030, 1, 1, tzinfo=timezone.utc)
instants = st.integers(min_value=0, max_value=10_000).map(lambda s: START + timedelta(seconds=s))


@st.composite
def stored(draw: st.DrawFn) -> tuple[Circuit, Settings]:
    state = draw(st.sampled_from(list(State)))
    opened = state in (State.OPEN, State.HALF_OPEN, State.FORCED_OPEN)
    circuit = Circuit(
        state,
        failure_count=draw(st.integers(min_value=0, max_value=5)),
        opened_at=draw(instants) if opened else draw(st.none() | instants),
        episode=draw(st.integers(min_value=0, max_value=3)),
        open_period=draw(st.none() | st.floats(min_value=0.001, max_value=5_000)),
    )
    settings = Settings(
        failure_threshold=3,
        expiry=timedelta(seconds=draw(st.floats(min_value=0.001, max_value=5_000))),
        half_open_max_calls=draw(st.none() | st.integers(min_value=1, max_value=3)),
    )
    return circuit, settings


@given(stored(), instants)
def test_state_at_is_the_current_state(pair: tuple[Circuit, Settings], now: datetime) -> None:
    circuit, settings = pair
    period = circuit.period(settings)
    expected = machine.current(circuit, settings, now).state
    assert machine.state_at(circuit.state, circuit.opened_at, period, now) is expected


def test_an_open_circuit_turns_half_open_exactly_when_its_period_ends() -> None:
    period = timedelta(seconds=30)
    assert machine.state_at(State.OPEN, START, period, START + period) is State.HALF_OPEN
    before = START + period - timedelta(microseconds=1)
    assert machine.state_at(State.OPEN, START, period, before) is State.OPEN
    assert machine.state_at(State.FORCED_OPEN, START, period, START + period * 2) is (
        State.FORCED_OPEN
    )


def test_permit_free_counts_against_the_limit() -> None:
    assert machine.permit_free(None, 100)
    assert machine.permit_free(2, 1)
    assert not machine.permit_free(2, 2)
