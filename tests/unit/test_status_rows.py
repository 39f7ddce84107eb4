"""Statuses read from rows (brama_sql.rows): the shortcuts that keep a status cheap (columns
read at once, no state machine outside an open period, no tally of transitions, settings
kept, the record made without its ``__init__``) give exactly the status the general path gave
(the state machine on a circuit, its settings and its tally), on generated rows: SQLAlchemy
``Row`` objects, named tuples and plain objects."""

from __future__ import annotations

import dataclasses
import pickle
from collections import namedtuple
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Row
from sqlalchemy.engine import IteratorResult
from sqlalchemy.engine.result import SimpleResultMetaData

from brama_sql import circuit as machine
from brama_sql.circuit import Circuit, Settings, State
from brama_sql.columns import Reader
from brama_sql.records import STATUS_FIELDS, ConnectionStatus, connection_status
from brama_sql.rows import _StatusColumns, circuit_of, settings_of, status_of
from brama_sql.schema import api_scope, connections
from brama_sql.tallies import Tally, transition_counts
from brama_sql.window import BUCKETS, Window, bucket_index

START = datetime(2030, 1, 1, tzinfo=timezone.utc)
COLUMNS = (*connections.c.keys(), "tail_successes", "tail_latest")
"""The columns of a row of ``with_tail``."""
WithTail = namedtuple("WithTail", COLUMNS)
Plain = namedtuple("Plain", COLUMNS[:-2])


# -- the general path, as status_of computed every status before the shortcuts ------------


def reference_circuit(row: Any) -> Circuit:
    return Circuit(
        State(row.state),
        row.failure_count,
        row.opened_at,
        row.episode,
        row.open_period,
        Window.from_json(row.window_counts),
    )


def reference_settings(row: Any) -> Settings:
    def duration(seconds: float | None) -> timedelta | None:
        return None if seconds is None else timedelta(seconds=seconds)

    return Settings(
        failure_threshold=row.failure_threshold,
        expiry=timedelta(seconds=row.expiry),
        half_open_max_calls=row.half_open_max_calls,
        probe_timeout=duration(row.probe_timeout),
        expiry_strategy=row.expiry_strategy,
        backoff_factor=row.backoff_factor,
        max_expiry=duration(row.max_expiry),
        failure_rate_threshold=row.failure_rate_threshold,
        window=duration(row.rate_window),
        minimum_calls=row.minimum_calls,
        slow_call_duration=duration(row.slow_call_duration),
        slow_call_rate_threshold=row.slow_call_rate_threshold,
    )


def reference_status(
    row: Any, now: datetime, tail: tuple[int, datetime | None] | None = None
) -> ConnectionStatus:
    count, latest = (row.tail_successes, row.tail_latest) if tail is None else tail
    tally = Tally(
        successes=row.successes,
        failures=row.failures,
        last_success_at=row.last_success_at,
        last_failure_at=row.last_failure_at,
        last_transition_at=row.last_transition_at,
        last_event_at=row.last_event_at,
        transitions=transition_counts(row.transitions),
    ).with_tail(count, latest)
    settings = reference_settings(row)
    stored = reference_circuit(row)
    circuit = machine.current(stored, settings, now)
    if circuit.state is not stored.state:
        state_changed_at = stored.expires_at(settings)
    else:
        state_changed_at = tally.last_transition_at or row.registered_at
    assert state_changed_at is not None
    reports = tally.successes + tally.failures
    opened = circuit.state in (State.OPEN, State.HALF_OPEN)
    totals = (
        circuit.window.totals(now, settings.window_span)
        if circuit.window is not None and circuit.state in (State.CLOSED, State.UNKNOWN)
        else None
    )
    return ConnectionStatus(
        identifier=row.identifier,
        scope=api_scope(row.scope),
        state=circuit.state,
        failure_count=circuit.failure_count,
        last_failure_time=tally.last_failure_at,
        last_success_time=tally.last_success_at,
        opened_at=circuit.opened_at,
        metadata=dict(row.metadata),
        failure_threshold=row.failure_threshold,
        expiry=row.expiry,
        registered_at=row.registered_at,
        state_changed_at=state_changed_at,
        total_successes=tally.successes,
        total_failures=tally.failures,
        success_rate=tally.successes / reports if reports else None,
        time_since_state_change=max(0.0, (now - state_changed_at).total_seconds()),
        half_open_max_calls=row.half_open_max_calls,
        probe_timeout=settings.permit_lifetime.total_seconds(),
        expiry_strategy=settings.expiry_strategy,
        backoff_factor=settings.backoff_factor,
        max_expiry=row.max_expiry,
        current_expiry=circuit.period(settings).total_seconds() if opened else None,
        next_probe_at=circuit.expires_at(settings),
        failure_rate_threshold=settings.failure_rate_threshold,
        window=row.rate_window,
        minimum_calls=settings.minimum_calls,
        slow_call_duration=row.slow_call_duration,
        slow_call_rate_threshold=settings.slow_call_rate_threshold,
        window_calls=0 if totals is None else totals.calls,
        window_failures=0 if totals is None else totals.failures,
        window_slow_calls=0 if totals is None else totals.slow,
    )


# -- generated rows --------------------------------------------------------------------------


def moments(around: datetime, seconds: float = 7_200) -> st.SearchStrategy[datetime]:
    """Instants within ``seconds`` of ``around``, to the microsecond."""
    span = int(seconds * 1_000_000)
    return st.integers(-span, span).map(lambda us: around + timedelta(microseconds=us))


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


SECONDS = st.floats(0.001, 100_000, allow_nan=False) | st.integers(1, 3_600).map(float)
RATES = st.floats(0.01, 1.0)
TRANSITION_KEYS = st.sampled_from(["report:open", "expiry:half_open"])


@st.composite
def windows(draw: st.DrawFn, now: datetime, span: float | None) -> list[list[int]]:
    """Stored ``window_counts`` around ``now``: buckets in, at the edge of, and out of it."""
    newest = bucket_index(now, timedelta(seconds=60 if span is None else span))
    indexes = draw(st.lists(st.integers(newest - BUCKETS - 2, newest + 2), max_size=4, unique=True))
    buckets = []
    for index in sorted(indexes):
        calls = draw(st.integers(1, 50))
        failures = draw(st.integers(0, calls))
        buckets.append([index, calls, failures, draw(st.integers(0, calls))])
    return buckets


@st.composite
def columns(draw: st.DrawFn) -> tuple[dict[str, Any], datetime]:
    """The column values of a row of ``with_tail``, and the instant it is read."""
    now = draw(moments(START, 86_400))
    registered_at = draw(moments(now - timedelta(days=1)))
    state = draw(st.sampled_from(list(State)))
    in_episode = state in (State.OPEN, State.HALF_OPEN, State.FORCED_OPEN)
    expiry = draw(SECONDS)
    rate_window = draw(maybe(SECONDS))
    values: dict[str, Any] = {
        "id": draw(st.integers(1, 10_000)),
        "identifier": draw(st.text(min_size=1, max_size=8)),
        "scope": draw(st.sampled_from(["", "payments", "eu"])),
        "state": state.value,
        "failure_count": draw(st.integers(0, 100)),
        # An open circuit's opened_at is around now less its expiry: just due, or not yet.
        "opened_at": draw(moments(now - timedelta(seconds=expiry))) if in_episode else None,
        "failure_threshold": draw(st.integers(1, 100)),
        "expiry": expiry,
        "half_open_max_calls": draw(maybe(st.integers(1, 10))),
        "probe_timeout": draw(maybe(SECONDS)),
        "episode": draw(st.integers(0, 20)),
        "metadata": draw(st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)),
        "registered_at": registered_at,
        "successes": draw(st.integers(0, 10**6)),
        "failures": draw(st.integers(0, 10**6)),
        "last_success_at": draw(maybe(moments(now))),
        "last_failure_at": draw(maybe(moments(now))),
        "last_transition_at": draw(maybe(moments(now))),
        "last_event_at": draw(maybe(moments(now))),
        "tallied_through": draw(st.integers(0, 10**6)),
        "pruned_through": 0,
        "checkpoint": None,
        "expiry_strategy": draw(st.sampled_from(list(machine.EXPIRY_STRATEGIES))),
        "backoff_factor": draw(st.floats(1.0, 10.0)),
        "max_expiry": draw(maybe(SECONDS)),
        "open_period": draw(maybe(SECONDS)) if in_episode else None,
        "failure_rate_threshold": draw(maybe(RATES)),
        "rate_window": rate_window,
        "minimum_calls": draw(maybe(st.integers(1, 100))),
        "slow_call_duration": draw(maybe(SECONDS)),
        "slow_call_rate_threshold": draw(maybe(RATES)),
        "window_counts": draw(maybe(windows(now, rate_window))),
        "transitions": draw(maybe(st.dictionaries(TRANSITION_KEYS, st.integers(0, 9)))),
        "tail_successes": draw(st.integers(0, 5)),
        "tail_latest": draw(maybe(moments(now))),
    }
    assert set(values) == set(COLUMNS)
    return values, now


def sqlalchemy_row(values: dict[str, Any], names: tuple[str, ...] = COLUMNS) -> Row[Any]:
    """A SQLAlchemy ``Row`` of ``values``, as a result of those columns gives it."""
    result = IteratorResult(SimpleResultMetaData(names), iter([tuple(values[n] for n in names)]))
    (row,) = result.all()
    return row


def same(status: ConnectionStatus, expected: ConnectionStatus) -> None:
    """``status`` is ``expected``: equal, field by field of the same type."""
    assert status == expected
    for name in STATUS_FIELDS:
        assert type(getattr(status, name)) is type(getattr(expected, name)), name


# -- the properties --------------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(columns())
def test_a_status_is_the_one_of_the_state_machine(
    generated: tuple[dict[str, Any], datetime],
) -> None:
    values, now = generated
    expected = reference_status(WithTail(**values), now)
    prepared = _StatusColumns(**{name: values[name] for name in _StatusColumns._fields})
    for row in (sqlalchemy_row(values), WithTail(**values), SimpleNamespace(**values), prepared):
        same(status_of(row, now), expected)
        assert vars(status_of(row, now)).keys() == STATUS_FIELDS
        assert settings_of(row) == reference_settings(row)
        assert circuit_of(row) == reference_circuit(row)


@settings(max_examples=200, deadline=None)
@given(columns(), st.integers(0, 5), maybe(moments(START, 86_400)))
def test_a_status_with_a_tail_read_apart_is_the_same(
    generated: tuple[dict[str, Any], datetime], count: int, latest: datetime | None
) -> None:
    """The tail given (MariaDB reads it in another query): the row has no tail columns."""
    values, now = generated
    expected = reference_status(WithTail(**values), now, (count, latest))
    plain = {name: values[name] for name in Plain._fields}
    for row in (sqlalchemy_row(values, Plain._fields), Plain(**plain)):
        same(status_of(row, now, (count, latest)), expected)


def test_a_status_past_its_expiry_is_half_open_since_the_expiry() -> None:
    """The general path's one case the shortcut never takes, checked by value."""
    values = {name: None for name in COLUMNS}
    values.update(
        identifier="db",
        scope="",
        state="open",
        failure_count=3,
        opened_at=START,
        failure_threshold=3,
        expiry=30.0,
        episode=1,
        metadata={},
        registered_at=START - timedelta(hours=1),
        successes=0,
        failures=3,
        last_transition_at=START,
        expiry_strategy="fixed",
        backoff_factor=2.0,
        tail_successes=0,
    )
    status = status_of(sqlalchemy_row(values), START + timedelta(seconds=45))
    assert status.state is State.HALF_OPEN
    assert status.state_changed_at == START + timedelta(seconds=30)
    assert status.time_since_state_change == 15.0
    assert status.current_expiry == 30.0
    assert status.next_probe_at is None


# -- the record made without __init__ ---------------------------------------------------------


def a_status_columns() -> dict[str, Any]:
    """The columns of a closed connection's row."""
    values: dict[str, Any] = {name: None for name in COLUMNS}
    values.update(
        identifier="db",
        scope="eu",
        state="closed",
        failure_count=0,
        failure_threshold=5,
        expiry=60.0,
        episode=0,
        metadata={"team": "a"},
        registered_at=START,
        successes=2,
        failures=1,
        expiry_strategy="fixed",
        backoff_factor=2.0,
        tail_successes=0,
    )
    return values


def a_status() -> ConnectionStatus:
    return status_of(WithTail(**a_status_columns()), START + timedelta(minutes=1))


def test_a_status_made_without_init_is_an_ordinary_frozen_record() -> None:
    status = a_status()
    fields = {field.name: getattr(status, field.name) for field in dataclasses.fields(status)}
    built = ConnectionStatus(**fields)
    assert status == built and hash(status) == hash(built)
    assert repr(status) == repr(built)
    assert vars(status) == vars(built)
    assert pickle.loads(pickle.dumps(status)) == status
    assert dataclasses.replace(status, failure_count=4).failure_count == 4
    assert status.available
    with pytest.raises(dataclasses.FrozenInstanceError):
        status.state = State.OPEN  # type: ignore[misc]


def test_a_status_needs_every_field_and_no_other() -> None:
    fields = dict(vars(a_status()))
    del fields["window_calls"]
    with pytest.raises(TypeError, match="missing \\['window_calls'\\]"):
        connection_status(**fields)
    with pytest.raises(TypeError, match="unknown \\['windows'\\]"):
        connection_status(**fields, window_calls=0, windows=1)


# -- the reader ----------------------------------------------------------------------------


def test_a_reader_reads_rows_named_tuples_and_objects_alike() -> None:
    Pair = namedtuple("Pair", ["a", "b"])
    read = Reader(("b", "a"), tuple)
    values = {"a": 1, "b": 2}
    rows = (sqlalchemy_row(values, ("a", "b")), Pair(1, 2), SimpleNamespace(a=1, b=2))
    assert [read(row) for row in rows] == [(2, 1)] * 3
    with pytest.raises(AttributeError):
        read(SimpleNamespace(a=1))
    with pytest.raises(ValueError):
        Reader(("a",), tuple)


def test_settings_are_kept_per_value_and_type() -> None:
    """Rows with the same settings share one :class:`Settings`; values that compare equal
    but differ in type (``3`` and ``3.0``) each keep their own."""
    values = dict(a_status_columns(), backoff_factor=3)
    by_int = settings_of(WithTail(**values))
    assert type(by_int.backoff_factor) is int
    assert settings_of(WithTail(**values)) is by_int
    by_float = settings_of(WithTail(**dict(values, backoff_factor=3.0)))
    assert type(by_float.backoff_factor) is float
