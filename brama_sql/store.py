"""The SQL side of brama_sql: every read and every row-locked, one-transaction change.

A change follows one recipe (:meth:`Store.change`): lock the connection's row, read the time,
ask the pure state machine in :mod:`brama_sql.circuit` what happens, write the row, append the
events, commit. Nothing here runs the caller's own work, so no lock outlives a call.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Row, delete, func, insert, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError

from brama_sql import circuit as machine
from brama_sql import migration
from brama_sql.circuit import Circuit, Kind, Occurrence, Outcome, Settings, State
from brama_sql.clock import Clock, read
from brama_sql.engine import WRITE
from brama_sql.errors import (
    AlreadyRegisteredError,
    BramaDatabaseError,
    NotRegisteredError,
    SchemaError,
)
from brama_sql.records import ConnectionStatus, Event
from brama_sql.schema import api_scope, connections, events, stored_scope

Step = Callable[[Circuit, Settings, datetime], Outcome]
"""A state-machine step applied to a locked connection at an instant."""


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


@dataclass(frozen=True)
class Registration:
    """What a new connection starts with."""

    metadata: dict[str, Any]
    settings: Settings


@dataclass
class _Metrics:
    """Aggregates of one connection's log since it was registered."""

    successes: int = 0
    failures: int = 0
    last_success: datetime | None = None
    last_failure: datetime | None = None
    last_transition: datetime | None = None


class Store:
    """Reads and changes brama_sql's tables through one SQLAlchemy engine."""

    def __init__(self, engine: Engine, clock: Clock) -> None:
        self.engine = engine
        self.clock = clock
        self._schema_checked = False

    # -- transactions -----------------------------------------------------------------------

    @contextmanager
    def reading(self, operation: str) -> Iterator[Connection]:
        """A read-only transaction; database failures become :class:`BramaDatabaseError`."""
        with self._translated(operation), self.engine.connect() as conn, conn.begin():
            self._ensure_schema(conn)
            yield conn

    @contextmanager
    def writing(self, operation: str) -> Iterator[Connection]:
        """A transaction that will write (``BEGIN IMMEDIATE`` on SQLite engines brama created)."""
        with (
            self._translated(operation),
            self.engine.connect().execution_options(**WRITE) as conn,
            conn.begin(),
        ):
            self._ensure_schema(conn)
            yield conn

    @contextmanager
    def _translated(self, operation: str) -> Iterator[None]:
        try:
            yield
        except DBAPIError as error:
            if isinstance(error, IntegrityError):
                raise
            self._schema_checked = False
            if not error.connection_invalidated:
                self._recheck_schema(operation, error)
            raise BramaDatabaseError(operation, error.orig or error) from error
        except SQLAlchemyError as error:
            raise BramaDatabaseError(operation, error) from error

    def _recheck_schema(self, operation: str, error: DBAPIError) -> None:
        """After a failed statement, tell a missing schema apart from a failing database."""
        try:
            with self.engine.connect() as conn:
                migration.check(conn)
        except SchemaError as missing:
            raise missing from error
        except SQLAlchemyError:
            return

    def _ensure_schema(self, conn: Connection) -> None:
        if not self._schema_checked:
            migration.check(conn)
            self._schema_checked = True

    def now(self, conn: Connection) -> datetime:
        """The current time, read once the row lock is held."""
        del conn  # the database clock of the fleet issue reads it from here
        return read(self.clock)

    # -- changes ----------------------------------------------------------------------------

    def register(self, identity: Identity, registration: Registration) -> ConnectionStatus:
        """Insert a connection in ``unknown`` and log ``registered``; one writer wins a race."""
        try:
            with self.writing("register") as conn:
                if _find(conn, identity) is not None:
                    raise AlreadyRegisteredError(identity.identifier, identity.scope)
                now = self.now(conn)
                settings = registration.settings
                connection_id = conn.execute(
                    insert(connections).values(
                        identifier=identity.identifier,
                        scope=stored_scope(identity.scope),
                        state=machine.INITIAL.state.value,
                        failure_count=0,
                        opened_at=None,
                        failure_threshold=settings.failure_threshold,
                        expiry=settings.expiry.total_seconds(),
                        metadata=registration.metadata,
                        registered_at=now,
                    )
                ).inserted_primary_key[0]
                _append(conn, connection_id, identity, [Occurrence(Kind.REGISTERED, now, 0)])
                row = _find(conn, identity)
                assert row is not None
                return _status(row, _Metrics(), now)
        except IntegrityError as error:
            # Another process inserted the same connection between our look and our insert.
            raise AlreadyRegisteredError(identity.identifier, identity.scope) from error

    def change(self, operation: str, identity: Identity, step: Step) -> Outcome:
        """Lock the row, apply a due expiry, then ``step``; write the row and the events."""
        with self.writing(operation) as conn:
            row = _find(conn, identity, lock=True)
            if row is None:
                raise NotRegisteredError(identity.identifier, identity.scope)
            now = self.now(conn)
            before, settings = _circuit(row), _settings(row)
            outcome = machine.expire(before, settings, now).then(
                lambda circuit: step(circuit, settings, now)
            )
            _save(conn, row, before, outcome)
            return outcome

    def unregister(self, identity: Identity) -> bool:
        """Delete the connection and log ``unregistered``; ``False`` when it did not exist."""
        with self.writing("unregister") as conn:
            row = _find(conn, identity, lock=True)
            if row is None:
                return False
            now = self.now(conn)
            self._remove(conn, row, now, Kind.UNREGISTERED)
            return True

    def cleanup(self, inactive_after: timedelta) -> int:
        """Remove connections whose last activity is older than ``inactive_after``."""
        with self.reading("cleanup") as conn:
            cutoff = self.now(conn) - inactive_after
            candidates = conn.execute(
                select(connections.c.identifier, connections.c.scope).where(
                    _last_activity() < cutoff
                )
            ).all()
        removed = 0
        for candidate in candidates:
            identity = Identity(candidate.identifier, api_scope(candidate.scope))
            with self.writing("cleanup") as conn:
                row = _find(conn, identity, lock=True)
                if row is None:
                    continue
                now = self.now(conn)
                last = conn.execute(
                    select(_last_activity()).where(connections.c.id == row.id)
                ).scalar_one()
                expires_at = _circuit(row).expires_at(_settings(row))
                if expires_at is not None and expires_at <= now:
                    last = max(last, expires_at)
                if last >= now - inactive_after:
                    continue
                self._remove(conn, row, now, Kind.REMOVED)
                removed += 1
        return removed

    def _remove(self, conn: Connection, row: Row[Any], now: datetime, kind: Kind) -> None:
        before = _circuit(row)
        outcome = machine.expire(before, _settings(row), now)
        _save(conn, row, before, outcome)
        conn.execute(delete(connections).where(connections.c.id == row.id))
        farewell = Occurrence(kind, now, outcome.circuit.failure_count)
        _append(conn, row.id, _identity(row), [farewell])

    # -- reads ------------------------------------------------------------------------------

    def status(self, identity: Identity) -> ConnectionStatus:
        """The connection's status with metrics from its log; raises if it is not registered."""
        with self.reading("status") as conn:
            row = _find(conn, identity)
            if row is None:
                raise NotRegisteredError(identity.identifier, identity.scope)
            metrics = _metrics(conn, connections.c.id == row.id)
            return _status(row, metrics.get(row.id, _Metrics()), self.now(conn))

    def available(self, identity: Identity) -> bool:
        """Whether the circuit lets calls through now; ``False`` for an unknown connection."""
        with self.reading("available") as conn:
            row = _find(conn, identity)
            if row is None:
                return False
            state = machine.current(_circuit(row), _settings(row), self.now(conn)).state
            return machine.is_available(state)

    def statuses(self, condition: ColumnElement[bool]) -> list[ConnectionStatus]:
        """The status of every connection matching ``condition``, by scope then identifier."""
        with self.reading("connections") as conn:
            rows = conn.execute(
                select(connections)
                .where(condition)
                .order_by(connections.c.scope, connections.c.identifier)
            ).all()
            metrics = _metrics(conn, condition)
            now = self.now(conn)
            return [_status(row, metrics.get(row.id, _Metrics()), now) for row in rows]

    def events(
        self, condition: ColumnElement[bool], limit: int | None
    ) -> list[Event]:
        """Logged events matching ``condition``, oldest first, at most ``limit`` of them."""
        with self.reading("events") as conn:
            query = select(events).where(condition).order_by(events.c.id)
            if limit is not None:
                query = query.limit(limit)
            return [_event(row) for row in conn.execute(query)]


# -- row helpers ----------------------------------------------------------------------------


def _find(conn: Connection, identity: Identity, lock: bool = False) -> Row[Any] | None:
    query = select(connections).where(identity.where())
    if lock:
        query = query.with_for_update()
    return conn.execute(query).one_or_none()


def _identity(row: Row[Any]) -> Identity:
    return Identity(row.identifier, api_scope(row.scope))


def _circuit(row: Row[Any]) -> Circuit:
    return Circuit(State(row.state), row.failure_count, row.opened_at)


def _settings(row: Row[Any]) -> Settings:
    return Settings(row.failure_threshold, timedelta(seconds=row.expiry))


def _save(conn: Connection, row: Row[Any], before: Circuit, outcome: Outcome) -> None:
    after = outcome.circuit
    if after != before:
        conn.execute(
            update(connections)
            .where(connections.c.id == row.id)
            .values(state=after.state.value, failure_count=after.failure_count,
                    opened_at=after.opened_at)
        )
    _append(conn, row.id, _identity(row), outcome.occurrences)


def _append(
    conn: Connection, connection_id: int, identity: Identity, occurrences: Sequence[Occurrence]
) -> None:
    if not occurrences:
        return
    actor = _actor()
    conn.execute(
        insert(events),
        [
            {
                "connection_id": connection_id,
                "identifier": identity.identifier,
                "scope": stored_scope(identity.scope),
                "kind": occurrence.kind.value,
                "occurred_at": occurrence.occurred_at,
                "from_state": _value(occurrence.from_state),
                "to_state": _value(occurrence.to_state),
                "reason": occurrence.reason,
                "failure_count": occurrence.failure_count,
                "cause": _value(occurrence.cause),
                "actor": actor,
            }
            for occurrence in occurrences
        ],
    )


def _value(member: State | machine.Cause | None) -> str | None:
    return None if member is None else member.value


def _actor() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _last_activity() -> Any:
    """The time of a connection's newest event (a correlated scalar subquery)."""
    return (
        select(func.max(events.c.occurred_at))
        .where(events.c.connection_id == connections.c.id)
        .scalar_subquery()
    )


def _metrics(conn: Connection, condition: ColumnElement[bool]) -> dict[int, _Metrics]:
    """Counts and latest times per kind of report and transition, from the log."""
    query = (
        select(
            events.c.connection_id,
            events.c.kind,
            func.count().label("n"),
            func.max(events.c.occurred_at).label("latest"),
        )
        .join(connections, connections.c.id == events.c.connection_id)
        .where(condition)
        .where(events.c.kind.in_([Kind.SUCCESS.value, Kind.FAILURE.value, Kind.TRANSITION.value]))
        .group_by(events.c.connection_id, events.c.kind)
    )
    result: dict[int, _Metrics] = {}
    for row in conn.execute(query):
        metrics = result.setdefault(row.connection_id, _Metrics())
        if row.kind == Kind.SUCCESS.value:
            metrics.successes, metrics.last_success = row.n, row.latest
        elif row.kind == Kind.FAILURE.value:
            metrics.failures, metrics.last_failure = row.n, row.latest
        else:
            metrics.last_transition = row.latest
    return result


def _status(row: Row[Any], metrics: _Metrics, now: datetime) -> ConnectionStatus:
    settings = _settings(row)
    stored = _circuit(row)
    circuit = machine.current(stored, settings, now)
    if circuit.state is not stored.state:
        # An expiry that no write has persisted yet: it happened at opened_at + expiry.
        state_changed_at = stored.expires_at(settings)
    else:
        state_changed_at = metrics.last_transition or row.registered_at
    assert state_changed_at is not None
    reports = metrics.successes + metrics.failures
    return ConnectionStatus(
        identifier=row.identifier,
        scope=api_scope(row.scope),
        state=circuit.state,
        failure_count=circuit.failure_count,
        last_failure_time=metrics.last_failure,
        last_success_time=metrics.last_success,
        opened_at=circuit.opened_at,
        metadata=dict(row.metadata),
        failure_threshold=row.failure_threshold,
        expiry=row.expiry,
        registered_at=row.registered_at,
        state_changed_at=state_changed_at,
        total_successes=metrics.successes,
        total_failures=metrics.failures,
        success_rate=metrics.successes / reports if reports else None,
        time_since_state_change=max(0.0, (now - state_changed_at).total_seconds()),
    )


def _event(row: Row[Any]) -> Event:
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
        actor=row.actor,
    )
