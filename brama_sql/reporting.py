"""Reports over a window of the log: per registered connection, its reports, failures, trips and
time spent open since a moment, read from the window's events only.

One read-only transaction runs four statements, each bounded by the window or by the number of
connections, never by the log's length:

- the registered rows (a point read per connection, with its stored circuit and options);
- the window's reports and trips per connection (a range of ``ix_brama_events_occurred_at``);
- the window's transitions, in order (the same range), from which the open episodes are cut;
- each row's last transition, looked up by ``(connection_id, occurred_at = last_transition_at)``
  on ``ix_brama_events_connection_id_occurred_at``;
- the connections with pruned hours in the window (``brama_rollups``' primary key).

The state at the window's start is the ``from_state`` of the first transition in the window, or,
with none, the row's stored state with a due expiry applied; an expiry that no write has
logged yet ends the open episode at ``opened_at + expiry``, as ``status()`` says.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, case, func, select
from sqlalchemy.engine import Connection, Row

from brama_sql import circuit as machine
from brama_sql.circuit import Cause, Kind, State
from brama_sql.records import ConnectionReport, Report
from brama_sql.rows import circuit_of, settings_of
from brama_sql.schema import api_scope, connections, events, rollups

HOUR = timedelta(hours=1)


@dataclass(frozen=True)
class Window:
    """What one report reads, in one snapshot."""

    rows: Sequence[Row[Any]]
    counts: dict[int, tuple[int, int, int]]
    """Per connection id: successes, failures, trips in the window."""
    transitions: dict[int, list[tuple[datetime, State, State]]]
    """Per connection id: the window's transitions, oldest first (time, from, to)."""
    last: dict[int, Any]
    """Per connection id: its newest transition event, if the log still holds it."""
    pruned: set[int]
    """Connection ids with pruned hours overlapping the window."""


def read_window(
    conn: Connection,
    condition: ColumnElement[bool],
    logged: ColumnElement[bool],
    since: datetime,
) -> Window:
    """Read what :func:`report` needs in the caller's transaction: ``condition`` selects the
    rows, ``logged`` the same connections' events (by the log's ``scope`` column)."""
    rows = conn.execute(
        select(connections).where(condition).order_by(connections.c.scope, connections.c.identifier)
    ).all()
    ids = {row.id for row in rows}
    in_window = events.c.occurred_at >= since
    is_trip = and_(
        events.c.kind == Kind.TRANSITION.value,
        events.c.to_state.in_([State.OPEN.value, State.FORCED_OPEN.value]),
    )
    counted = conn.execute(
        select(
            events.c.connection_id,
            func.sum(case((events.c.kind == Kind.SUCCESS.value, 1), else_=0)),
            func.sum(case((events.c.kind == Kind.FAILURE.value, 1), else_=0)),
            func.sum(case((is_trip, 1), else_=0)),
        )
        .where(logged, in_window, events.c.kind.in_([Kind.SUCCESS, Kind.FAILURE, Kind.TRANSITION]))
        .group_by(events.c.connection_id)
    ).all()
    counts = {
        connection_id: (int(successes or 0), int(failures or 0), int(trips or 0))
        for connection_id, successes, failures, trips in counted
        if connection_id in ids
    }
    transitions: dict[int, list[tuple[datetime, State, State]]] = defaultdict(list)
    for row in conn.execute(
        select(events.c.connection_id, events.c.occurred_at, events.c.from_state, events.c.to_state)
        .where(logged, in_window, events.c.kind == Kind.TRANSITION.value)
        .order_by(events.c.occurred_at, events.c.id)
    ):
        if row.connection_id in ids:
            transitions[row.connection_id].append(
                (row.occurred_at, State(row.from_state), State(row.to_state))
            )
    logged_at = events.alias("logged_at")
    newest = (
        select(func.max(logged_at.c.id))
        .where(
            logged_at.c.connection_id == connections.c.id,
            logged_at.c.occurred_at == connections.c.last_transition_at,
            logged_at.c.kind == Kind.TRANSITION.value,
        )
        .scalar_subquery()
    )
    last: dict[int, Any] = {
        row.connection_id: row
        for row in conn.execute(
            select(
                connections.c.id.label("connection_id"),
                events.c.from_state,
                events.c.to_state,
                events.c.cause,
            )
            .select_from(connections.join(events, events.c.id == newest))
            .where(condition)
        )
    }
    pruned = {
        connection_id
        for (connection_id,) in conn.execute(
            select(rollups.c.connection_id).where(rollups.c.hour > since - HOUR).distinct()
        )
        if connection_id in ids
    }
    return Window(rows, counts, dict(transitions), last, pruned)


def report(window: Window, since: datetime, until: datetime) -> Report:
    """The report of a window read at ``until`` (pure: no I/O)."""
    return Report(
        since=since,
        until=until,
        connections=[_connection(window, row, since, until) for row in window.rows],
    )


def _connection(
    window: Window, row: Row[Any], since: datetime, until: datetime
) -> ConnectionReport:
    successes, failures, trips = window.counts.get(row.id, (0, 0, 0))
    reports = successes + failures
    stored = circuit_of(row)
    settings = settings_of(row)
    spans = _open_spans(window.transitions.get(row.id, []), stored, settings, since, until)
    last = window.last.get(row.id)
    return ConnectionReport(
        identifier=row.identifier,
        scope=api_scope(row.scope),
        state=machine.current(stored, settings, until).state,
        reports=reports,
        successes=successes,
        failures=failures,
        success_rate=successes / reports if reports else None,
        trips=trips,
        time_open=sum(spans, 0.0),
        longest_open=max(spans, default=0.0),
        last_transition_at=row.last_transition_at,
        last_transition_from=None if last is None else State(last.from_state),
        last_transition_to=None if last is None else State(last.to_state),
        last_transition_cause=None if last is None or last.cause is None else Cause(last.cause),
        complete=row.id not in window.pruned,
    )


def _open_spans(
    transitions: list[tuple[datetime, State, State]],
    stored: machine.Circuit,
    settings: machine.Settings,
    since: datetime,
    until: datetime,
) -> list[float]:
    """Seconds of each open episode within ``[since, until]``: the spans between the window's
    start, each transition and a pending expiry, in which the circuit was open. A manual open
    of an open circuit starts a new episode (it restarts the expiry too)."""
    first = transitions[0][1] if transitions else machine.current(stored, settings, since).state
    points: list[tuple[datetime, State]] = [(since, first)]
    points.extend((at, to_state) for at, _, to_state in transitions)
    expires_at = stored.expires_at(settings)
    if expires_at is not None and since < expires_at <= until:
        points.append((expires_at, State.HALF_OPEN))  # an expiry no write has logged yet
    points.sort(key=lambda point: point[0])  # stable: the window's start stays first
    ends = [at for at, _ in points[1:]] + [until]
    return [
        max(0.0, (min(end, until) - at).total_seconds())
        for (at, state), end in zip(points, ends, strict=True)
        if state in (State.OPEN, State.FORCED_OPEN)
    ]
