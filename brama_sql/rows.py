"""Rows of the brama_sql tables read as the records of the API: circuits, settings,
statuses and events."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Row, Select, bindparam, func, select

from brama_sql import circuit as machine
from brama_sql.circuit import Circuit, Kind, Settings, State
from brama_sql.prepared import Prepared
from brama_sql.records import ConnectionStatus, Event
from brama_sql.schema import api_scope, connections, events, stored_scope
from brama_sql.tallies import Tally
from brama_sql.window import Window


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


def circuit_of(row: Row[Any]) -> Circuit:
    """The circuit a ``brama_connections`` row holds."""
    return Circuit(
        State(row.state),
        row.failure_count,
        row.opened_at,
        row.episode,
        row.open_period,
        Window.from_json(row.window_counts),
    )


def settings_of(row: Row[Any]) -> Settings:
    """The state-machine settings a ``brama_connections`` row holds."""
    return Settings(
        failure_threshold=row.failure_threshold,
        expiry=timedelta(seconds=row.expiry),
        half_open_max_calls=row.half_open_max_calls,
        probe_timeout=_duration(row.probe_timeout),
        expiry_strategy=row.expiry_strategy,
        backoff_factor=row.backoff_factor,
        max_expiry=_duration(row.max_expiry),
        failure_rate_threshold=row.failure_rate_threshold,
        window=_duration(row.rate_window),
        minimum_calls=row.minimum_calls,
        slow_call_duration=_duration(row.slow_call_duration),
        slow_call_rate_threshold=row.slow_call_rate_threshold,
    )


def _duration(seconds: float | None) -> timedelta | None:
    return None if seconds is None else timedelta(seconds=seconds)


PRUNING_COLUMNS = frozenset({"checkpoint", "pruned_through"})
"""The columns only pruning and ``verify`` read."""
ROW_COLUMNS = [column for column in connections.c if column.name not in PRUNING_COLUMNS]
"""The columns of a ``brama_connections`` row that calls read: all but pruning's bookkeeping
(its checkpoint, a JSON document, would cost its parsing on every call)."""


def with_tail(condition: ColumnElement[bool]) -> Select[Any]:
    """The ``brama_connections`` rows matching ``condition``, each with its tail: how many
    events it has after ``tallied_through`` (healthy successes not folded in yet, a bounded
    number) and the latest one's time. One statement, so row and tail are one snapshot."""
    tail = (events.c.connection_id == connections.c.id) & (
        events.c.id > connections.c.tallied_through
    )
    return select(
        *ROW_COLUMNS,
        select(func.count()).where(tail).scalar_subquery().label("tail_successes"),
        # coalesce(x, x): not the bare column, so PostgreSQL does not turn the max() into a
        # backward scan of the (connection_id, occurred_at) index filtered on id, which reads
        # the connection's whole log when its tail is empty; it aggregates the tail's range.
        select(func.max(func.coalesce(events.c.occurred_at, events.c.occurred_at)))
        .where(tail)
        .scalar_subquery()
        .label("tail_latest"),
    ).where(condition)


Tail = tuple[int, "datetime | None"]
"""A row's tail: how many events after ``tallied_through``, and the latest one's time."""


def tally_of(row: Row[Any], tail: Tail | None = None) -> Tally:
    """The tallies of a row of :func:`with_tail` (or of a plain row and its ``tail``): those
    it keeps plus its tail."""
    count, latest = (row.tail_successes, row.tail_latest) if tail is None else tail
    return Tally.of_row(row).with_tail(count, latest)


def status_of(row: Row[Any], now: datetime, tail: Tail | None = None) -> ConnectionStatus:
    """The status of a row of :func:`with_tail` (or of a plain row and its ``tail``) at
    ``now``."""
    tally = tally_of(row, tail)
    settings = settings_of(row)
    stored = circuit_of(row)
    circuit = machine.current(stored, settings, now)
    if circuit.state is not stored.state:
        # An expiry that no write has persisted yet: it happened at opened_at + expiry.
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
    select(
        connections.c.id,
        connections.c.state,
        connections.c.failure_count,
        connections.c.opened_at,
        connections.c.episode,
        connections.c.failure_threshold,
        connections.c.expiry,
        connections.c.half_open_max_calls,
        connections.c.probe_timeout,
        connections.c.expiry_strategy,
        connections.c.backoff_factor,
        connections.c.max_expiry,
        connections.c.open_period,
        connections.c.failure_rate_threshold,
        connections.c.rate_window,
        connections.c.minimum_calls,
        connections.c.slow_call_duration,
        connections.c.slow_call_rate_threshold,
        connections.c.window_counts,
    ).where(BY_IDENTITY)
)
"""Only what deciding admission needs (:func:`circuit_of`, :func:`settings_of`): a read on
every guarded call, where each further column costs the driver its parsing."""
FIND_FOR_UPDATE = Prepared(select(*ROW_COLUMNS).where(BY_IDENTITY).with_for_update())
FIND_FOR_SHARE = Prepared(select(*ROW_COLUMNS).where(BY_IDENTITY).with_for_update(read=True))
STATUS = Prepared(with_tail(BY_IDENTITY))
"""A connection's row with its tail (:func:`with_tail`), by :data:`BY_IDENTITY`."""
