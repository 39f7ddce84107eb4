"""Replaying a log: the events of a connection, fed in order through the state machine, must
reproduce its row. Operators and tests use :func:`replay` to check that the log explains it."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import replace

from sqlalchemy import func, select
from sqlalchemy.engine import Connection, Engine

from brama_sql import circuit as machine
from brama_sql.circuit import MANUAL_ACTIONS, Cause, Circuit, Kind, Occurrence, Settings
from brama_sql.errors import BramaError
from brama_sql.records import Event
from brama_sql.rows import Identity, circuit_of, event_record, settings_of
from brama_sql.schema import connections, events, stored_scope


class ReplayError(BramaError):
    """The log does not follow from the state machine."""


def replay(log: Iterable[Event], settings: Settings) -> Circuit | None:
    """The circuit the log leads to, or ``None`` when the connection was unregistered or removed.

    ``log`` holds one connection's events in id order (several registrations are fine: each
    ``registered`` starts afresh, with the settings it records). ``configured`` events change
    the settings from there on. ``settings`` are the connection's settings at the end of the
    log; they serve for a registration logged before registrations recorded their settings.
    Raises :class:`ReplayError` at the first event the machine would not have written.
    """
    circuit: Circuit | None = None
    events = list(log)
    current = settings
    expected: deque[Occurrence] = deque()
    for index, event in enumerate(events):
        seen = _occurrence(event)
        if expected:
            _match(event, seen, expected.popleft())
            continue
        if event.kind is Kind.REGISTERED:
            circuit = machine.INITIAL
            current = _registered_with(events, index, settings)
            continue
        if circuit is None:
            raise ReplayError(f"event {event.id} ({event.kind}) before any registration")
        if event.kind in (Kind.UNREGISTERED, Kind.REMOVED):
            _expect_no_expiry(event, circuit, current)
            circuit = None
            continue
        if event.kind in (Kind.SUCCESS, Kind.FAILURE):
            _expect_no_expiry(event, circuit, current)
            outcome = machine.record(
                circuit, current, event.kind, event.occurred_at, event.reason, event.probe
            )
        elif event.kind is Kind.CONFIGURED:
            _expect_no_expiry(event, circuit, current)
            current = _configured(event, current)
            outcome = machine.configure(circuit, current, event.occurred_at, event.details or {})
        elif event.cause is Cause.EXPIRY:
            outcome = machine.expire(circuit, current, event.occurred_at)
        elif event.cause in MANUAL_ACTIONS:
            assert event.cause is not None
            _expect_no_expiry(event, circuit, current)
            outcome = machine.force(circuit, event.cause, event.occurred_at, event.reason)
        else:
            raise ReplayError(f"event {event.id}: a {event.cause} transition that nothing caused")
        if not outcome.occurrences:
            raise ReplayError(f"event {event.id}: the machine writes nothing here")
        _match(event, seen, outcome.occurrences[0])
        expected.extend(outcome.occurrences[1:])
        circuit = outcome.circuit
    if expected:
        raise ReplayError(f"the log ends before the events the machine expects: {list(expected)}")
    return circuit


def _registered_with(events: list[Event], index: int, final: Settings) -> Settings:
    """The settings the registration at ``events[index]`` started with: as it recorded them,
    else (a registration logged by an older release) the ``final`` settings with the old
    values of its later ``configured`` events put back, newest first."""
    recorded = (events[index].details or {}).get("settings")
    if recorded is not None:
        return Settings.from_options(recorded)
    later: list[Event] = []
    for event in events[index + 1 :]:
        if event.kind is Kind.REGISTERED:
            break
        if event.kind is Kind.CONFIGURED:
            later.append(event)
    settings = final
    for event in reversed(later):
        settings = settings.updated((event.details or {}).get("old", {}))
    return settings


def _configured(event: Event, settings: Settings) -> Settings:
    """The settings after a ``configured`` event, which must have changed them from
    ``settings``."""
    details = event.details or {}
    old, new = details.get("old", {}), details.get("new", {})
    if not new:
        raise ReplayError(f"event {event.id}: a configured event that changed nothing")
    stored = settings.as_options()
    if any(name in stored and stored[name] != value for name, value in old.items()):
        raise ReplayError(
            f"event {event.id}: configured from {old}, but the settings were {stored}"
        )
    return settings.updated(new)


def _occurrence(event: Event) -> Occurrence:
    return Occurrence(
        event.kind,
        event.occurred_at,
        event.failure_count,
        from_state=event.from_state,
        to_state=event.to_state,
        reason=event.reason,
        cause=event.cause,
        probe=event.probe,
        details=event.details,
    )


def _match(event: Event, seen: Occurrence, wanted: Occurrence) -> None:
    if seen.kind is Kind.TRANSITION and wanted.cause is not Cause.REPORT:
        # Manual and expiry transitions: the machine's default reason may have been replaced.
        seen = replace(seen, reason=wanted.reason)
    if seen != wanted:
        raise ReplayError(f"event {event.id} is {seen}, the machine expects {wanted}")


def _expect_no_expiry(event: Event, circuit: Circuit, settings: Settings) -> None:
    if machine.expire(circuit, settings, event.occurred_at).occurrences:
        raise ReplayError(f"event {event.id}: a due expiry was not logged before it")


def verify(
    engine: Engine, identifier: str, scope: str | None = None, settings: Settings | None = None
) -> Circuit | None:
    """Check that a connection's log explains its row; return the replayed circuit.

    Reads the row and the log of its latest registration from one snapshot, replays the log
    and compares state, ``failure_count``, ``opened_at`` and episode with the row. The settings
    come from the row; pass ``settings`` for a connection that no longer exists (its log must
    then end with its removal). Raises :class:`ReplayError` on any difference.
    """
    identity = Identity(identifier, scope)
    with _snapshot(engine) as conn:
        row = conn.execute(select(connections).where(identity.where())).one_or_none()
        mine = (events.c.identifier == identifier) & (events.c.scope == stored_scope(scope))
        incarnation = (
            row.id
            if row is not None
            else conn.execute(select(func.max(events.c.connection_id)).where(mine)).scalar()
        )
        log = [
            event_record(found)
            for found in conn.execute(
                select(events)
                .where(mine, events.c.connection_id == incarnation)
                .order_by(events.c.id)
            )
        ]
    if settings is None:
        if row is None:
            raise ReplayError(f"{identifier!r}/{scope!r} has no row: pass the settings it had")
        settings = settings_of(row)
    replayed = replay(log, settings)
    stored = None if row is None else circuit_of(row)
    if replayed != stored:
        raise ReplayError(f"the log leads to {replayed}, the row holds {stored}")
    return replayed


@contextmanager
def _snapshot(engine: Engine) -> Iterator[Connection]:
    """A read transaction that sees one snapshot for all its statements (PostgreSQL's default
    READ COMMITTED would not; SQLite's read transactions and MySQL's default already do)."""
    with engine.connect() as conn:
        if conn.dialect.name in ("postgresql", "mysql"):
            conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            driver = conn.connection.dbapi_connection
            if conn.dialect.name == "sqlite" and driver is not None and not driver.in_transaction:
                conn.exec_driver_sql("BEGIN")  # pysqlite would run each read on its own
            yield conn
