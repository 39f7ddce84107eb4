"""The SQL side of brama_sql: every read and every row-locked, one-transaction change.

A change follows one recipe (:meth:`Store.change`): lock the connection's row, read the time,
ask the pure state machine in :mod:`brama_sql.circuit` what happens, write the row, append the
events, commit. Nothing here runs the caller's own work, so no lock outlives a call.
"""

from __future__ import annotations

import functools
import random
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import (
    ColumnElement,
    Row,
    Select,
    case,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, IntegrityError, ProgrammingError, SQLAlchemyError
from sqlalchemy.pool import StaticPool

from brama_sql import circuit as machine
from brama_sql import engine as engines
from brama_sql import migration
from brama_sql.circuit import Circuit, Kind, Occurrence, Outcome, Settings, State
from brama_sql.clock import Clock, database_now, read
from brama_sql.engine import WRITE
from brama_sql.errors import (
    AlreadyRegisteredError,
    BramaDatabaseError,
    BramaError,
    NotRegisteredError,
    SchemaError,
)
from brama_sql.records import ConnectionStatus, Event
from brama_sql.schema import api_scope, connections, events, permits, stored_scope

T = TypeVar("T")

Step = Callable[[Circuit, Settings, datetime, bool], Outcome]
"""A state-machine step applied to a locked connection at an instant; the flag tells whether
the caller holds a probe permit of the current episode."""

ATTEMPTS = 3
"""How often a transaction is tried when the database reports a deadlock or a serialization
failure (never for a lock wait timeout: that limit exists to give up)."""
RETRYABLE_SQLSTATES = {"40001", "40P01"}
LOCK_WAIT = "brama_sql_lock_wait"
"""Key in a pooled connection's ``info``: the lock wait limit already set on its session."""
RETRYABLE_MYSQL_ERRORS = {1213, 1020}
"""Deadlock, and MariaDB's "record has changed since last read" (snapshot isolation)."""


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


class Store:
    """Reads and changes brama_sql's tables through one SQLAlchemy engine.

    ``clock`` is a callable, or ``None`` to read the database server's clock inside each
    transaction. ``lock_wait`` bounds how long a write waits for a row lock. ``owns_engine``
    tells whether brama_sql created the engine (:func:`brama_sql.engine.build` then made every
    session setting when the connection was opened); on a host's engine each write
    transaction is prepared here instead (:meth:`_prepare_session`, :meth:`_begin_write`).
    """

    def __init__(
        self, engine: Engine, clock: Clock | None, lock_wait: float, owns_engine: bool
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.lock_wait = lock_wait
        self.owns_engine = owns_engine
        self._schema_checked = False
        # One DBAPI connection shared by all threads (in-memory SQLite): one user at a time.
        shared = isinstance(engine.pool, StaticPool)
        self._gate: AbstractContextManager[Any] = threading.RLock() if shared else nullcontext()

    # -- transactions -----------------------------------------------------------------------

    def run(
        self,
        operation: str,
        body: Callable[[Connection], T],
        *,
        write: bool,
        on_conflict: Callable[[], BramaError] | None = None,
    ) -> T:
        """Run ``body`` in one transaction and commit; retry deadlocks a bounded number of
        times; turn database failures into :class:`BramaDatabaseError` naming ``operation``,
        and a unique-key conflict into ``on_conflict()`` when given."""
        for attempt in range(1, ATTEMPTS + 1):
            try:
                with self._gate:
                    return self._once(body, write)
            except IntegrityError as error:
                if on_conflict is not None and _unique_conflict(error):
                    raise on_conflict() from error
                raise BramaDatabaseError(operation, error.orig or error) from error
            except DBAPIError as error:
                if attempt < ATTEMPTS and _retryable(error):
                    time.sleep(random.uniform(0.005, 0.02) * attempt)
                    continue
                if _missing_table(error):
                    self._schema_checked = False
                    self._recheck_schema(error)
                raise BramaDatabaseError(operation, error.orig or error) from error
            except SQLAlchemyError as error:
                raise BramaDatabaseError(operation, error) from error
        raise AssertionError("unreachable")  # pragma: no cover

    def _once(self, body: Callable[[Connection], T], write: bool) -> T:
        with self.engine.connect() as conn:
            self._ensure_schema(conn)
            if write:
                conn.execution_options(**WRITE)
                if not self.owns_engine:
                    self._prepare_session(conn)
            with conn.begin():
                if write and not self.owns_engine:
                    self._begin_write(conn)
                return body(conn)

    def _prepare_session(self, conn: Connection) -> None:
        """On a connection of the host's engine, make the session settings that
        :func:`brama_sql.engine.build` makes on brama_sql's own when they connect: the lock
        wait limit (MySQL and SQLite have no transaction-local form of it) and, on MySQL,
        READ COMMITTED for this use of the connection (SQLAlchemy restores the level after)."""
        dialect = conn.dialect.name
        if dialect == "mysql":
            conn.execution_options(isolation_level="READ COMMITTED")
        if dialect not in ("mysql", "sqlite") or conn.info.get(LOCK_WAIT) == self.lock_wait:
            return
        if dialect == "mysql":
            seconds = engines.whole_seconds(self.lock_wait)
            conn.exec_driver_sql(f"SET SESSION innodb_lock_wait_timeout = {seconds}")
        else:
            conn.exec_driver_sql(f"PRAGMA busy_timeout = {engines.milliseconds(self.lock_wait)}")
        conn.commit()
        conn.info[LOCK_WAIT] = self.lock_wait

    def _begin_write(self, conn: Connection) -> None:
        """First statements of a write transaction on the host's engine: PostgreSQL's
        transaction-local lock wait limit; on SQLite, ``BEGIN IMMEDIATE`` when the driver
        would otherwise begin lazily (its reads would then run outside the transaction)."""
        dialect = conn.dialect.name
        if dialect == "postgresql":
            milliseconds = engines.milliseconds(self.lock_wait)
            conn.exec_driver_sql(f"SET LOCAL lock_timeout = {milliseconds}")
        elif dialect == "sqlite":
            driver = conn.connection.dbapi_connection
            if driver is not None and not driver.in_transaction:
                conn.exec_driver_sql("BEGIN IMMEDIATE")

    def _recheck_schema(self, error: DBAPIError) -> None:
        """After a statement failed on a missing table, tell whether the schema was dropped
        or is behind (raise :class:`SchemaError`) or something else went wrong."""
        try:
            with self.engine.connect() as conn:
                migration.check(conn)
        except SchemaError as missing:
            raise missing from error
        except SQLAlchemyError:
            return

    def _ensure_schema(self, conn: Connection) -> None:
        """Check the schema revision once, in a transaction of its own: inside the operation's
        transaction, this first read would fix MariaDB's REPEATABLE READ snapshot before the
        row lock is taken."""
        if not self._schema_checked:
            with conn.begin():
                migration.check(conn)
            self._schema_checked = True

    def now(self, conn: Connection) -> datetime:
        """The current time, read once the row lock is held (from the database if so set)."""
        return database_now(conn) if self.clock is None else read(self.clock)

    # -- changes ----------------------------------------------------------------------------

    def register(
        self, identity: Identity, registration: Registration, actor: str
    ) -> ConnectionStatus:
        """Insert a connection in ``unknown`` and log ``registered``; one writer wins a race."""

        def body(conn: Connection) -> ConnectionStatus:
            if _find(conn, identity) is not None:
                raise AlreadyRegisteredError(identity.identifier, identity.scope)
            now = self.now(conn)
            settings = registration.settings
            inserted = conn.execute(
                insert(connections).values(
                    identifier=identity.identifier,
                    scope=stored_scope(identity.scope),
                    state=machine.INITIAL.state.value,
                    failure_count=machine.INITIAL.failure_count,
                    opened_at=None,
                    episode=machine.INITIAL.episode,
                    failure_threshold=settings.failure_threshold,
                    expiry=settings.expiry.total_seconds(),
                    half_open_max_calls=settings.half_open_max_calls,
                    probe_timeout=_seconds(settings.probe_timeout),
                    metadata=registration.metadata,
                    registered_at=now,
                )
            )
            assert inserted.inserted_primary_key is not None
            connection_id = inserted.inserted_primary_key[0]
            _append(conn, connection_id, identity, [Occurrence(Kind.REGISTERED, now, 0)], actor)
            (row,) = conn.execute(_with_metrics(connections.c.id == connection_id)).all()
            return _status(row, now)

        # Another process may insert the same connection between our look and our insert:
        # the unique key refuses the second, and it becomes AlreadyRegisteredError.
        return self.run(
            "register",
            body,
            write=True,
            on_conflict=lambda: AlreadyRegisteredError(identity.identifier, identity.scope),
        )

    def change(
        self, operation: str, identity: Identity, step: Step, actor: str, *, report: bool
    ) -> Outcome:
        """Lock the row, apply a due expiry, then ``step``; write the row and the events.

        For a ``report``, ``step`` learns whether ``actor`` holds a probe permit of the
        current episode, and that permit is settled (deleted).
        """

        def body(conn: Connection) -> Outcome:
            row = _find(conn, identity, lock=True)
            if row is None:
                raise NotRegisteredError(identity.identifier, identity.scope)
            now = self.now(conn)
            before, settings = circuit_of(row), settings_of(row)
            expired = machine.expire(before, settings, now)
            permit = None
            if report:
                permit = _held_permit(conn, row, expired.circuit, settings, actor, now)
            outcome = expired.then(lambda circuit: step(circuit, settings, now, permit is not None))
            if permit is not None:
                conn.execute(delete(permits).where(permits.c.id == permit))
            _save(conn, row, before, outcome, actor)
            return outcome

        return self.run(operation, body, write=True)

    def claim(self, identity: Identity, actor: str) -> bool:
        """Whether ``actor`` may call now; in a half-open circuit with limited permits, claim one.

        A caller that already holds an unexpired permit of this episode keeps it (``True``).
        Expired permits and those of earlier episodes are dropped first, so a probe that never
        reported frees its place after ``probe_timeout``.
        """

        def body(conn: Connection) -> bool:
            row = _find(conn, identity, lock=True)
            if row is None:
                return False
            now = self.now(conn)
            before, settings = circuit_of(row), settings_of(row)
            outcome = machine.expire(before, settings, now)
            _save(conn, row, before, outcome, actor)
            circuit = outcome.circuit
            if circuit.state is not State.HALF_OPEN or not settings.permits_limited:
                return machine.is_available(circuit.state)
            _drop_permits(
                conn,
                row.id,
                or_(permits.c.episode != circuit.episode, permits.c.expires_at <= now),
            )
            if _held_permit(conn, row, circuit, settings, actor, now) is not None:
                return True
            active = conn.execute(
                select(func.count()).select_from(permits).where(permits.c.connection_id == row.id)
            ).scalar_one()
            if not machine.may_claim_permit(settings, active):
                return False
            conn.execute(
                insert(permits).values(
                    connection_id=row.id,
                    episode=circuit.episode,
                    holder=actor,
                    claimed_at=now,
                    expires_at=now + settings.permit_lifetime,
                )
            )
            return True

        return self.run("available", body, write=True)

    def unregister(self, identity: Identity, actor: str) -> bool:
        """Delete the connection and log ``unregistered``; ``False`` when it did not exist."""

        def body(conn: Connection) -> bool:
            row = _find(conn, identity, lock=True)
            if row is None:
                return False
            _remove(conn, row, self.now(conn), Kind.UNREGISTERED, actor)
            return True

        return self.run("unregister", body, write=True)

    def cleanup(self, inactive_after: timedelta, actor: str) -> int:
        """Remove connections whose last activity is older than ``inactive_after``.

        Activity is the newest event, or a due expiry that no write has persisted yet.
        """

        def candidates(conn: Connection) -> list[Identity]:
            cutoff = self.now(conn) - inactive_after
            rows = conn.execute(
                select(connections.c.identifier, connections.c.scope).where(
                    _last_activity() < cutoff
                )
            )
            return [Identity(row.identifier, api_scope(row.scope)) for row in rows]

        def remove_if_idle(conn: Connection, identity: Identity) -> bool:
            row = _find(conn, identity, lock=True)
            if row is None:
                return False
            now = self.now(conn)
            last = conn.execute(
                select(_last_activity()).where(connections.c.id == row.id)
            ).scalar_one()
            expires_at = circuit_of(row).expires_at(settings_of(row))
            if expires_at is not None and expires_at <= now:
                last = max(last, expires_at)
            if last >= now - inactive_after:
                return False
            _remove(conn, row, now, Kind.REMOVED, actor)
            return True

        removed = 0
        for identity in self.run("cleanup", candidates, write=False):
            if self.run(
                "cleanup", functools.partial(remove_if_idle, identity=identity), write=True
            ):
                removed += 1
        return removed

    # -- reads ------------------------------------------------------------------------------

    def status(self, identity: Identity) -> ConnectionStatus:
        """The connection's status with metrics from its log; raises if it is not registered."""

        def body(conn: Connection) -> ConnectionStatus:
            row = conn.execute(_with_metrics(identity.where())).one_or_none()
            if row is None:
                raise NotRegisteredError(identity.identifier, identity.scope)
            return _status(row, self.now(conn))

        return self.run("status", body, write=False)

    def available(self, identity: Identity, actor: str) -> bool:
        """Whether the circuit lets ``actor`` call now; ``False`` for an unknown connection.

        Reads only, unless the circuit is half-open with limited permits and a permit may be
        free: then :meth:`claim` decides under the row lock. A caller that holds no permit
        while all are taken is refused from the read alone, without queueing for the lock.
        """

        def body(conn: Connection) -> bool | None:
            row = _find(conn, identity)
            if row is None:
                return False
            settings = settings_of(row)
            now = self.now(conn)
            stored = circuit_of(row)
            circuit = machine.current(stored, settings, now)
            if circuit.state is not State.HALF_OPEN or not settings.permits_limited:
                return machine.is_available(circuit.state)
            if circuit == stored:  # the expiry is persisted, so permits may exist
                live = conn.execute(
                    select(func.count(), func.max(case((permits.c.holder == actor, 1), else_=0)))
                    .select_from(permits)
                    .where(
                        permits.c.connection_id == row.id,
                        permits.c.episode == circuit.episode,
                        permits.c.expires_at > now,
                    )
                ).one()
                if not live[1] and not machine.may_claim_permit(settings, live[0]):
                    return False
            return None

        answer = self.run("available", body, write=False)
        return self.claim(identity, actor) if answer is None else answer

    def statuses(self, condition: ColumnElement[bool]) -> list[ConnectionStatus]:
        """The status of every connection matching ``condition``, by scope then identifier."""

        def body(conn: Connection) -> list[ConnectionStatus]:
            query = _with_metrics(condition).order_by(connections.c.scope, connections.c.identifier)
            rows = conn.execute(query).all()
            now = self.now(conn)
            return [_status(row, now) for row in rows]

        return self.run("connections", body, write=False)

    def events(self, condition: ColumnElement[bool], limit: int | None) -> list[Event]:
        """Logged events matching ``condition``, oldest first, at most ``limit`` of them."""

        def body(conn: Connection) -> list[Event]:
            query = select(events).where(condition).order_by(events.c.id)
            if limit is not None:
                query = query.limit(limit)
            return [event_record(row) for row in conn.execute(query)]

        return self.run("events", body, write=False)


# -- row helpers ----------------------------------------------------------------------------


def _unique_conflict(error: IntegrityError) -> bool:
    """Whether ``error`` is the unique key of ``(identifier, scope)`` refusing a duplicate."""
    message = str(error.orig)
    return "uq_brama_connections" in message or "brama_connections.identifier" in message


def _missing_table(error: DBAPIError) -> bool:
    """Whether ``error`` may come from a table that is not there (never from a lost
    connection: then a second connection to look would only wait again)."""
    if error.connection_invalidated:
        return False
    return isinstance(error, ProgrammingError) or "no such table" in str(error.orig)


def _retryable(error: DBAPIError) -> bool:
    original = error.orig
    if getattr(original, "sqlstate", None) in RETRYABLE_SQLSTATES:
        return True
    args: tuple[Any, ...] = getattr(original, "args", ())
    return bool(args) and args[0] in RETRYABLE_MYSQL_ERRORS


def _find(conn: Connection, identity: Identity, lock: bool = False) -> Row[Any] | None:
    query = select(connections).where(identity.where())
    if lock:
        query = query.with_for_update()
    return conn.execute(query).one_or_none()


def _held_permit(
    conn: Connection,
    row: Row[Any],
    circuit: Circuit,
    settings: Settings,
    actor: str,
    now: datetime,
) -> int | None:
    """The id of ``actor``'s unexpired permit of the current episode, if it holds one."""
    if circuit.state is not State.HALF_OPEN or not settings.permits_limited:
        return None
    permit: int | None = conn.execute(
        select(permits.c.id).where(
            permits.c.connection_id == row.id,
            permits.c.holder == actor,
            permits.c.episode == circuit.episode,
            permits.c.expires_at > now,
        )
    ).scalar()
    return permit


def _identity(row: Row[Any]) -> Identity:
    return Identity(row.identifier, api_scope(row.scope))


def circuit_of(row: Row[Any]) -> Circuit:
    """The circuit a ``brama_connections`` row holds."""
    return Circuit(State(row.state), row.failure_count, row.opened_at, row.episode)


def settings_of(row: Row[Any]) -> Settings:
    """The state-machine settings a ``brama_connections`` row holds."""
    return Settings(
        failure_threshold=row.failure_threshold,
        expiry=timedelta(seconds=row.expiry),
        half_open_max_calls=row.half_open_max_calls,
        probe_timeout=None if row.probe_timeout is None else timedelta(seconds=row.probe_timeout),
    )


def _seconds(duration: timedelta | None) -> float | None:
    return None if duration is None else duration.total_seconds()


def _save(conn: Connection, row: Row[Any], before: Circuit, outcome: Outcome, actor: str) -> None:
    """Write the row if the circuit changed, drop permits once it leaves half-open, log."""
    after = outcome.circuit
    if after != before:
        conn.execute(
            update(connections)
            .where(connections.c.id == row.id)
            .values(
                state=after.state.value,
                failure_count=after.failure_count,
                opened_at=after.opened_at,
                episode=after.episode,
            )
        )
    if (
        row.half_open_max_calls is not None
        and after.state is not State.HALF_OPEN
        and any(occurrence.from_state is State.HALF_OPEN for occurrence in outcome.occurrences)
    ):
        conn.execute(delete(permits).where(permits.c.connection_id == row.id))
    _append(conn, row.id, _identity(row), outcome.occurrences, actor)


def _drop_permits(
    conn: Connection, connection_id: int, condition: ColumnElement[bool] | None = None
) -> None:
    """Delete a connection's permits (those matching ``condition``), by primary key.

    A ``DELETE ... WHERE connection_id = ?`` may scan, and under InnoDB then lock, other
    connections' permits, so that callers of different connections deadlock each other.
    The caller holds the connection's row lock, so the ids it reads cannot change under it.
    """
    query = select(permits.c.id).where(permits.c.connection_id == connection_id)
    if condition is not None:
        query = query.where(condition)
    ids = list(conn.execute(query).scalars())
    if ids:
        conn.execute(delete(permits).where(permits.c.id.in_(ids)))


def _remove(conn: Connection, row: Row[Any], now: datetime, kind: Kind, actor: str) -> None:
    """Persist a due expiry, delete the row and its permits, log ``kind``."""
    before = circuit_of(row)
    outcome = machine.expire(before, settings_of(row), now)
    _save(conn, row, before, outcome, actor)
    _drop_permits(conn, row.id)
    conn.execute(delete(connections).where(connections.c.id == row.id))
    farewell = Occurrence(kind, now, outcome.circuit.failure_count)
    _append(conn, row.id, _identity(row), [farewell], actor)


def _append(
    conn: Connection,
    connection_id: int,
    identity: Identity,
    occurrences: Sequence[Occurrence],
    actor: str,
) -> None:
    if not occurrences:
        return
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
                "probe": occurrence.probe,
                "actor": actor,
            }
            for occurrence in occurrences
        ],
    )


def _value(member: State | machine.Cause | None) -> str | None:
    return None if member is None else member.value


def _last_activity() -> Any:
    """The time of a connection's newest event (a correlated scalar subquery)."""
    return (
        select(func.max(events.c.occurred_at))
        .where(events.c.connection_id == connections.c.id)
        .scalar_subquery()
    )


def _with_metrics(condition: ColumnElement[bool]) -> Select[Any]:
    """The rows matching ``condition``, each with aggregates of its log since registration.

    One statement, so the row and its metrics come from one snapshot on every dialect; each
    aggregate is a correlated subquery on the ``(connection_id, kind, occurred_at)`` index.
    """

    def aggregate(kind: Kind, function: Any, label: str) -> Any:
        return (
            select(function)
            .where(events.c.connection_id == connections.c.id, events.c.kind == kind.value)
            .scalar_subquery()
            .label(label)
        )

    latest = func.max(events.c.occurred_at)
    return select(
        connections,
        aggregate(Kind.SUCCESS, func.count(), "successes"),
        aggregate(Kind.SUCCESS, latest, "last_success"),
        aggregate(Kind.FAILURE, func.count(), "failures"),
        aggregate(Kind.FAILURE, latest, "last_failure"),
        aggregate(Kind.TRANSITION, latest, "last_transition"),
    ).where(condition)


def _status(row: Row[Any], now: datetime) -> ConnectionStatus:
    """The status of a row of :func:`_with_metrics` at ``now``."""
    settings = settings_of(row)
    stored = circuit_of(row)
    circuit = machine.current(stored, settings, now)
    if circuit.state is not stored.state:
        # An expiry that no write has persisted yet: it happened at opened_at + expiry.
        state_changed_at = stored.expires_at(settings)
    else:
        state_changed_at = row.last_transition or row.registered_at
    assert state_changed_at is not None
    reports = row.successes + row.failures
    return ConnectionStatus(
        identifier=row.identifier,
        scope=api_scope(row.scope),
        state=circuit.state,
        failure_count=circuit.failure_count,
        last_failure_time=row.last_failure,
        last_success_time=row.last_success,
        opened_at=circuit.opened_at,
        metadata=dict(row.metadata),
        failure_threshold=row.failure_threshold,
        expiry=row.expiry,
        registered_at=row.registered_at,
        state_changed_at=state_changed_at,
        total_successes=row.successes,
        total_failures=row.failures,
        success_rate=row.successes / reports if reports else None,
        time_since_state_change=max(0.0, (now - state_changed_at).total_seconds()),
        half_open_max_calls=row.half_open_max_calls,
        probe_timeout=settings.permit_lifetime.total_seconds(),
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
    )
