"""The connections a run measures, and how they are put in the database before it starts.

Every connection is in the scope ``bench`` with a failure threshold no run reaches, so that
``failure()`` keeps its circuit closed:

- ``hot``: the one connection of the hot layout;
- ``spread-000`` ...: the connections of the spread layout (each process starts at its own
  offset and goes round them);
- ``status-000`` ...: as many connections holding exactly ``status_events`` events each, read
  by ``status()`` (``status-000`` alone in the hot layout) and written by nobody;
- ``idle-000`` ...: connections with their registration only, which fill the table up to
  ``fleet`` connections for ``connections()``.

The hot, spread and status connections are registered and closed (a first success) through the
public API; the rest of the status logs and the idle connections are copies of those rows and
events inserted in bulk, so seeding takes seconds, and the history stays one that
``brama-sql verify`` explains.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import create_engine, func, insert, select, update
from sqlalchemy.engine import URL, Connection

from bench.plan import FLEET, HOT, SPREAD, STATUS, Plan
from brama_sql import Brama
from brama_sql.schema import connections, events
from brama_sql.validation import MAX_THRESHOLD

SCOPE = "bench"
HOT_NAME = "hot"
EXPIRY_S = 60.0


def spread_names(plan: Plan) -> list[str]:
    """The connections of the spread layout."""
    return [f"spread-{index:03d}" for index in range(plan.spread)]


def status_names(plan: Plan) -> list[str]:
    """The connections ``status()`` reads, each with ``plan.status_events`` events."""
    return [f"status-{index:03d}" for index in range(plan.spread)]


def idle_names(plan: Plan) -> list[str]:
    """The connections that fill the table up to ``plan.fleet``."""
    return [f"idle-{index:03d}" for index in range(plan.fleet - 1 - 2 * plan.spread)]


def targets(plan: Plan, operation: str, layout: str) -> list[str]:
    """The identifiers an operation goes round in a layout (none for the fleet)."""
    if layout == FLEET:
        return []
    if operation == STATUS:
        names = status_names(plan)
        return names[:1] if layout == HOT else names
    if layout == SPREAD:
        return spread_names(plan)
    return [HOT_NAME]


def seed(url: URL, plan: Plan) -> dict[str, int]:
    """Fill a migrated, empty brama_sql database (migrating it first) with the run's
    connections; return the number of connections and events it holds."""
    brama = Brama(url, failure_threshold=MAX_THRESHOLD, expiry=EXPIRY_S)
    try:
        brama.migrate()
        for name in [HOT_NAME, *spread_names(plan), *status_names(plan)]:
            brama.register(name, scope=SCOPE)
            brama.success(name, scope=SCOPE)
        idle = idle_names(plan)
        if idle:
            brama.register(idle[0], scope=SCOPE)
    finally:
        brama.dispose()
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            for name in status_names(plan):
                _fill_log(conn, name, plan.status_events)
            if idle:
                _copy_idle(conn, idle[0], idle[1:])
            # The copied events are counted in the rows' tallies: fold them all.
            newest = (
                select(func.coalesce(func.max(events.c.id), 0))
                .where(events.c.connection_id == connections.c.id)
                .scalar_subquery()
            )
            conn.execute(update(connections).values(tallied_through=newest))
        with engine.connect() as conn:
            counted = {
                "connections": conn.execute(select(func.count()).select_from(connections)),
                "events": conn.execute(select(func.count()).select_from(events)),
            }
            return {key: int(result.scalar_one()) for key, result in counted.items()}
    finally:
        engine.dispose()


def _fill_log(conn: Connection, name: str, wanted: int) -> None:
    """Copy the connection's success event until its log holds ``wanted`` events, each a
    microsecond after the one before (a log of healthy successes)."""
    connection_id = conn.execute(
        select(connections.c.id).where(
            connections.c.identifier == name, connections.c.scope == SCOPE
        )
    ).scalar_one()
    logged = conn.execute(
        select(func.count()).select_from(events).where(events.c.connection_id == connection_id)
    ).scalar_one()
    template = _without_id(
        conn.execute(
            select(events)
            .where(events.c.connection_id == connection_id, events.c.kind == "success")
            .order_by(events.c.id.desc())
            .limit(1)
        )
        .one()
        ._asdict()
    )
    start = datetime.now(timezone.utc)
    copies = [
        {**template, "occurred_at": start + timedelta(microseconds=index), "call_id": None}
        for index in range(1, wanted - logged + 1)
    ]
    if copies:
        conn.execute(insert(events), copies)
        latest = copies[-1]["occurred_at"]
        conn.execute(  # the row's tallies count its log, as brama_sql's own writes keep them
            update(connections)
            .where(connections.c.id == connection_id)
            .values(
                successes=connections.c.successes + len(copies),
                last_success_at=latest,
                last_event_at=latest,
            )
        )


def _copy_idle(conn: Connection, template_name: str, names: list[str]) -> None:
    """Insert ``names`` as copies of a registered connection's row and its ``registered``
    event."""
    if not names:
        return
    row = conn.execute(
        select(connections).where(
            connections.c.identifier == template_name, connections.c.scope == SCOPE
        )
    ).one()
    event = conn.execute(select(events).where(events.c.connection_id == row.id)).one()
    row_values, event_values = _without_id(row._asdict()), _without_id(event._asdict())
    conn.execute(insert(connections), [{**row_values, "identifier": name} for name in names])
    found = conn.execute(
        select(connections.c.identifier, connections.c.id).where(
            connections.c.identifier.in_(names), connections.c.scope == SCOPE
        )
    )
    ids = {identifier: connection_id for identifier, connection_id in found}
    conn.execute(
        insert(events),
        [
            {**event_values, "identifier": name, "connection_id": ids[name], "call_id": None}
            for name in names
        ],
    )


def _without_id(values: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if key != "id"}
