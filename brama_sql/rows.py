"""Rows of the brama_sql tables read as the records of the API: circuits, settings,
statuses and events."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any, NamedTuple

from sqlalchemy import ColumnElement, Row, Select, bindparam, func, select, true

from brama_sql import circuit as machine
from brama_sql.circuit import Circuit, Kind, Settings, State
from brama_sql.columns import Reader
from brama_sql.log_ranges import tail_of
from brama_sql.prepared import Prepared
from brama_sql.records import ConnectionStatus, Event, made_status
from brama_sql.schema import UNSCOPED, api_scope, connections, events, stored_scope
from brama_sql.tallies import tail_counted
from brama_sql.window import Totals, Window


@dataclass(frozen=True)
class Identity:
    """A connection's key: ``(identifier, scope)``."""

    identifier: str
    scope: str | None

    def where(self) -> ColumnElement[bool]:
        """The condition selecting this connection's row."""
        return (connections.c.identifier == self.identifier) & (
            connections.c.scope == stored_scope(self.scope)
        )

    def parameters(self) -> dict[str, str]:
        """The values of :data:`BY_IDENTITY`'s parameters for this connection."""
        return {"identifier": self.identifier, "scope": stored_scope(self.scope)}


BY_IDENTITY = (connections.c.identifier == bindparam("identifier")) & (
    connections.c.scope == bindparam("scope")
)
"""The condition selecting one connection's row, its values given at execution
(:meth:`Identity.parameters`): statements built once are compiled and cached once, where a
statement built per call costs more Python than its round trip."""


def identity_of(row: Row[Any]) -> Identity:
    """The identity of a ``brama_connections`` row."""
    return Identity(row.identifier, api_scope(row.scope))


class _CircuitColumns(NamedTuple):
    """The columns of a ``brama_connections`` row that :func:`circuit_of` reads."""

    state: str
    failure_count: int
    opened_at: datetime | None
    episode: int
    open_period: float | None
    window_counts: list[list[int]] | None


class _SettingsColumns(NamedTuple):
    """The columns of a ``brama_connections`` row that :func:`settings_of` reads."""

    failure_threshold: int
    expiry: float
    half_open_max_calls: int | None
    probe_timeout: float | None
    expiry_strategy: str
    backoff_factor: float
    max_expiry: float | None
    failure_rate_threshold: float | None
    rate_window: float | None
    minimum_calls: int | None
    slow_call_duration: float | None
    slow_call_rate_threshold: float | None


_read_circuit = Reader(_CircuitColumns._fields, _CircuitColumns._make)
_read_settings: Reader[tuple[Any, ...]] = Reader(_SettingsColumns._fields, tuple)
STATES = {state.value: state for state in State}
"""Each :class:`State` by its stored value (a dict lookup costs a fraction of ``State(value)``)."""


def state_of(value: str) -> State:
    """The :class:`State` of a stored ``state`` value (``ValueError`` for an unknown one)."""
    state = STATES.get(value)
    return State(value) if state is None else state


def circuit_of(row: Any) -> Circuit:
    """The circuit a ``brama_connections`` row holds."""
    columns = _read_circuit(row)
    return Circuit(
        state_of(columns.state),
        columns.failure_count,
        columns.opened_at,
        columns.episode,
        columns.open_period,
        Window.from_json(columns.window_counts),
    )


def settings_of(row: Any) -> Settings:
    """The state-machine settings a ``brama_connections`` row holds."""
    return _settings(*_read_settings(row))


@lru_cache(maxsize=1024, typed=True)
def _settings(*values: Any) -> Settings:
    """The settings of the values of a row's :class:`_SettingsColumns`, kept for the next
    row with the same ones, of the same types: a fleet has few distinct settings, making them
    costs several times looking them up, and :class:`Settings` is immutable."""
    columns = _SettingsColumns._make(values)
    return Settings(
        failure_threshold=columns.failure_threshold,
        expiry=timedelta(seconds=columns.expiry),
        half_open_max_calls=columns.half_open_max_calls,
        probe_timeout=_duration(columns.probe_timeout),
        expiry_strategy=columns.expiry_strategy,
        backoff_factor=columns.backoff_factor,
        max_expiry=_duration(columns.max_expiry),
        failure_rate_threshold=columns.failure_rate_threshold,
        window=_duration(columns.rate_window),
        minimum_calls=columns.minimum_calls,
        slow_call_duration=_duration(columns.slow_call_duration),
        slow_call_rate_threshold=columns.slow_call_rate_threshold,
    )


def _duration(seconds: float | None) -> timedelta | None:
    return None if seconds is None else timedelta(seconds=seconds)


PRUNING_COLUMNS = frozenset({"checkpoint", "pruned_through"})
"""The columns only pruning and ``verify`` read."""
ROW_COLUMNS = [column for column in connections.c if column.name not in PRUNING_COLUMNS]
"""The columns of a ``brama_connections`` row that calls read: all but pruning's bookkeeping
(its checkpoint, a JSON document, would cost its parsing on every call)."""


def with_tail(
    condition: ColumnElement[bool] | None = None, *, lateral: bool = False
) -> Select[Any]:
    """The ``brama_connections`` rows matching ``condition``, each with its tail: how many
    events it has after ``tallied_through`` (healthy successes not folded in yet, a bounded
    number) and the latest one's time. One statement, so row and tail are one snapshot.

    The tail's count and time are two scalar subqueries, each a range of the row's events;
    ``lateral`` reads them in one (a ``LATERAL`` join, PostgreSQL's and MySQL 8's, not
    SQLite's nor MariaDB's): one range per row instead of two."""
    within = tail_of(connections.c.id, connections.c.tallied_through)
    if lateral:
        tail = (
            select(
                func.count().label("tail_successes"),
                latest_occurred_at().label("tail_latest"),
            )
            .where(within)
            .lateral("tail")
        )
        query = select(*status_columns(), tail.c.tail_successes, tail.c.tail_latest).select_from(
            connections.join(tail, true())
        )
    else:
        query = select(
            *status_columns(),
            select(func.count()).where(within).scalar_subquery().label("tail_successes"),
            select(latest_occurred_at()).where(within).scalar_subquery().label("tail_latest"),
        )
    return query if condition is None else query.where(condition)


def _prepared_status(condition: ColumnElement[bool] | None, *order: Any) -> Prepared:
    """:func:`with_tail` of ``condition`` in ``order``, prepared, its rows made as
    :class:`_StatusColumns`; on PostgreSQL with its ``LATERAL`` tail."""
    return Prepared(
        with_tail(condition).order_by(*order),
        row=_StatusColumns,
        variants={"postgresql": with_tail(condition, lateral=True).order_by(*order)},
    )


def latest_occurred_at() -> ColumnElement[Any]:
    """``max(occurred_at)`` over a range of one connection's events by id (its tail).
    Written ``max(coalesce(occurred_at, occurred_at))``, not over the bare column, so that
    PostgreSQL does not turn it into a backward scan of the ``(connection_id, occurred_at)``
    index filtered on id, which reads the connection's whole log when the range is empty."""
    return func.max(func.coalesce(events.c.occurred_at, events.c.occurred_at))


def _named(names: Sequence[str]) -> list[ColumnElement[Any]]:
    """The ``brama_connections`` columns ``names``."""
    return [connections.c[name] for name in names]


Tail = tuple[int, "datetime | None"]
"""A row's tail: how many events after ``tallied_through``, and the latest one's time."""


class _StatusColumns(NamedTuple):
    """The columns of a ``brama_connections`` row that its status shows or derives from
    (among them those of :func:`circuit_of` and :func:`settings_of`), then its tail."""

    identifier: str
    scope: str
    metadata: dict[str, Any]
    registered_at: datetime
    state: str
    failure_count: int
    opened_at: datetime | None
    episode: int
    open_period: float | None
    window_counts: list[list[int]] | None
    failure_threshold: int
    expiry: float
    half_open_max_calls: int | None
    probe_timeout: float | None
    expiry_strategy: str
    backoff_factor: float
    max_expiry: float | None
    failure_rate_threshold: float | None
    rate_window: float | None
    minimum_calls: int | None
    slow_call_duration: float | None
    slow_call_rate_threshold: float | None
    successes: int
    failures: int
    last_success_at: datetime | None
    last_failure_at: datetime | None
    last_transition_at: datetime | None
    tail_successes: int
    tail_latest: datetime | None


def status_columns() -> list[ColumnElement[Any]]:
    """The ``brama_connections`` columns a status reads (:class:`_StatusColumns` but the
    tail): fewer columns, less for the driver to parse on every ``status()``."""
    return _named(_StatusColumns._fields[:-2])


_read_status = Reader(_StatusColumns._fields, _StatusColumns._make)
_read_status_without_tail: Reader[tuple[Any, ...]] = Reader(_StatusColumns._fields[:-2], tuple)


def _status_columns(row: Any, tail: Tail | None) -> _StatusColumns:
    """The columns of a row of :func:`with_tail` (``tail`` ``None``), or of a plain row and
    its ``tail``."""
    if tail is None:
        return _read_status(row)
    return _StatusColumns._make((*_read_status_without_tail(row), *tail))


class _Shown(NamedTuple):
    """What a status shows of the circuit at the moment of the read."""

    state: State
    state_changed_at: datetime
    current_expiry: float | None
    next_probe_at: datetime | None
    totals: Totals | None


def status_of(row: Any, now: datetime, tail: Tail | None = None) -> ConnectionStatus:
    """The status of a row of :func:`with_tail` (or of a plain row and its ``tail``) at
    ``now``. ``row`` is a SQLAlchemy ``Row`` or any object with the columns as attributes."""
    # A row of a prepared statement (STATUS, STATUSES) is made as _StatusColumns: no copy.
    columns = row if tail is None and type(row) is _StatusColumns else _status_columns(row, tail)
    state = state_of(columns.state)
    if state is State.OPEN or state is State.HALF_OPEN:
        shown = _in_open_period(columns, now)
    else:
        shown = _outside_open_period(columns, state, now)
    return _status(columns, now, shown)


def _in_open_period(columns: _StatusColumns, now: datetime) -> _Shown:
    """An open or half-open circuit as the state machine has it at ``now``: an open one
    whose expiry has elapsed is half-open since its expiry."""
    settings = settings_of(columns)
    stored = circuit_of(columns)
    circuit = machine.current(stored, settings, now)
    if circuit.state is not stored.state:
        # An expiry that no write has persisted yet: it happened at opened_at + expiry.
        state_changed_at = stored.expires_at(settings)
    else:
        state_changed_at = columns.last_transition_at or columns.registered_at
    assert state_changed_at is not None
    return _Shown(
        state=circuit.state,
        state_changed_at=state_changed_at,
        current_expiry=circuit.period(settings).total_seconds(),
        next_probe_at=circuit.expires_at(settings),
        totals=None,
    )


def _outside_open_period(columns: _StatusColumns, state: State, now: datetime) -> _Shown:
    """A circuit in a ``state`` that no expiry moves (not open nor half-open): as stored,
    with no open period, and its rate window counted at ``now`` when it is closed or unknown
    (what :func:`_in_open_period` would find, without building the circuit and settings)."""
    totals = None
    if columns.window_counts is not None and (state is State.CLOSED or state is State.UNKNOWN):
        window = Window.from_json(columns.window_counts)
        assert window is not None
        totals = window.totals(now, settings_of(columns).window_span)
    state_changed_at = columns.last_transition_at or columns.registered_at
    assert state_changed_at is not None
    return _Shown(
        state=state,
        state_changed_at=state_changed_at,
        current_expiry=None,
        next_probe_at=None,
        totals=totals,
    )


def _status(columns: _StatusColumns, now: datetime, shown: _Shown) -> ConnectionStatus:
    """The status of a row's ``columns`` at ``now``, its circuit ``shown``."""
    successes, last_success_at = tail_counted(
        columns.successes, columns.last_success_at, columns.tail_successes, columns.tail_latest
    )
    failures = columns.failures
    reports = successes + failures
    state_changed_at = shown.state_changed_at
    totals = shown.totals
    scope = columns.scope
    # Every field of ConnectionStatus (tests check the keys); made_status skips the check
    # connection_status makes, a dict literal costs less than as many keyword arguments.
    return made_status(
        {
            "identifier": columns.identifier,
            "scope": None if scope == UNSCOPED else scope,
            "state": shown.state,
            "failure_count": columns.failure_count,
            "last_failure_time": columns.last_failure_at,
            "last_success_time": last_success_at,
            "opened_at": columns.opened_at,
            "metadata": dict(columns.metadata),
            "failure_threshold": columns.failure_threshold,
            "expiry": columns.expiry,
            "registered_at": columns.registered_at,
            "state_changed_at": state_changed_at,
            "total_successes": successes,
            "total_failures": failures,
            "success_rate": successes / reports if reports else None,
            "time_since_state_change": max(0.0, (now - state_changed_at).total_seconds()),
            "half_open_max_calls": columns.half_open_max_calls,
            "probe_timeout": _permit_lifetime(columns),
            "expiry_strategy": columns.expiry_strategy,
            "backoff_factor": columns.backoff_factor,
            "max_expiry": columns.max_expiry,
            "current_expiry": shown.current_expiry,
            "next_probe_at": shown.next_probe_at,
            "failure_rate_threshold": columns.failure_rate_threshold,
            "window": columns.rate_window,
            "minimum_calls": columns.minimum_calls,
            "slow_call_duration": columns.slow_call_duration,
            "slow_call_rate_threshold": columns.slow_call_rate_threshold,
            "window_calls": 0 if totals is None else totals.calls,
            "window_failures": 0 if totals is None else totals.failures,
            "window_slow_calls": 0 if totals is None else totals.slow,
        }
    )


def _permit_lifetime(columns: _StatusColumns) -> float:
    """:attr:`Settings.permit_lifetime` in seconds: the probe timeout, else the expiry."""
    seconds = columns.expiry if columns.probe_timeout is None else columns.probe_timeout
    return _whole_microseconds(seconds)


@lru_cache(maxsize=1024)
def _whole_microseconds(seconds: float) -> float:
    """``seconds`` in whole microseconds, as ``timedelta(seconds=seconds)`` holds them (kept:
    a fleet has few distinct durations, and equal numbers give equal ``timedelta``)."""
    return timedelta(seconds=seconds).total_seconds()


def event_record(row: Row[Any]) -> Event:
    """The :class:`Event` of a ``brama_events`` row."""
    return Event(
        id=row.id,
        identifier=row.identifier,
        scope=api_scope(row.scope),
        kind=Kind(row.kind),
        occurred_at=row.occurred_at,
        from_state=None if row.from_state is None else State(row.from_state),
        to_state=None if row.to_state is None else State(row.to_state),
        reason=row.reason,
        failure_count=row.failure_count,
        cause=None if row.cause is None else machine.Cause(row.cause),
        probe=bool(row.probe),
        actor=row.actor,
        duration=row.duration,
        details=row.details,
    )


FIND = Prepared(select(*ROW_COLUMNS).where(BY_IDENTITY))
"""A connection's row, by :data:`BY_IDENTITY`."""
FIND_CIRCUIT = Prepared(
    select(connections.c.id, *_named(_CircuitColumns._fields + _SettingsColumns._fields)).where(
        BY_IDENTITY
    )
)
"""A connection's circuit and settings (:func:`circuit_of`, :func:`settings_of`): what the
availability cache keeps of each ``available()`` read, whose admission needs only those of
:data:`ADMISSION` among them."""
ADMISSION = Prepared(
    select(
        connections.c.id,
        connections.c.state,
        connections.c.opened_at,
        connections.c.episode,
        connections.c.open_period,
        connections.c.expiry,
        connections.c.half_open_max_calls,
    ).where(BY_IDENTITY)
)
"""What deciding admission needs without the availability cache (see
:func:`~brama_sql.circuit.state_at`): a read on every guarded call."""
FIND_FOR_UPDATE = Prepared(select(*ROW_COLUMNS).where(BY_IDENTITY).with_for_update())
FIND_FOR_SHARE = Prepared(
    select(
        connections.c.id,
        connections.c.identifier,
        connections.c.scope,
        connections.c.tallied_through,
        *_named(_CircuitColumns._fields + _SettingsColumns._fields),
    )
    .where(BY_IDENTITY)
    .with_for_update(read=True)
)
"""A connection's row under its shared lock: what a healthy success decides on (its identity,
circuit and settings, and where its tallies end), no more (each column costs its parsing)."""
STATUS = _prepared_status(BY_IDENTITY)
"""A connection's row with its tail (:func:`with_tail`), by :data:`BY_IDENTITY`."""
LISTED = (connections.c.scope, connections.c.identifier)
"""The order of ``connections()``: by scope, then identifier."""
STATUSES = _prepared_status(None, *LISTED)
"""Every connection's row with its tail, in :data:`LISTED` order."""
STATUSES_IN_SCOPE = _prepared_status(connections.c.scope == bindparam("scope"), *LISTED)
"""The rows of the connections of one stored ``scope`` with their tails, in :data:`LISTED`
order."""
