"""The SQL side of brama_sql: every read and every row-locked, one-transaction change.

A change follows one recipe (:meth:`Store.change`): lock the connection's row, read the time,
ask the pure state machine in :mod:`brama_sql.circuit` what happens, write the row, append the
events, commit. Nothing here runs the caller's own work, so no lock outlives a call.
"""

from __future__ import annotations

import enum
import functools
import heapq
import itertools
import logging
import secrets
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, TypeVar, overload

from sqlalchemy import (
    ColumnElement,
    Row,
    Select,
    bindparam,
    case,
    delete,
    exists,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from brama_sql import circuit as machine
from brama_sql import validation
from brama_sql.availability import AvailabilityCache
from brama_sql.circuit import Circuit, Kind, Occurrence, Outcome, Settings, State, column_values
from brama_sql.clock import Clock, database_now, read
from brama_sql.errors import (
    AlreadyRegisteredError,
    BramaDatabaseError,
    BramaError,
    NotRegisteredError,
)
from brama_sql.listeners import Listeners, Written
from brama_sql.log_ranges import newest_event_of, tail_of
from brama_sql.options import Changes, Registration, changes
from brama_sql.prepared import Executor, Prepared, execute
from brama_sql.records import ConnectionStatus, Event
from brama_sql.rows import (
    ADMISSION,
    FIND,
    FIND_CIRCUIT,
    FIND_FOR_SHARE,
    FIND_FOR_UPDATE,
    LISTED,
    STATUS,
    STATUSES,
    STATUSES_IN_SCOPE,
    Identity,
    Tail,
    circuit_of,
    event_record,
    identity_of,
    latest_occurred_at,
    settings_of,
    state_of,
    status_columns,
    status_of,
    with_tail,
)
from brama_sql.schema import api_scope, connections, events, permits, stored_scope
from brama_sql.tallies import Added, Tally, transition_key
from brama_sql.transaction import Transactions
from brama_sql.types import UTCDateTime

Step = Callable[[Circuit, Settings, datetime, bool], Outcome]
"""A state-machine step applied to a locked connection at an instant; the flag tells whether
the caller holds a probe permit of the current episode."""
Declared = Callable[[Identity], "Registration | None"]
"""The declared options of a connection, or ``None`` when it was not declared."""
DECLARED = "declared"
"""The reason of the ``registered`` event of a connection registered from its declaration."""

logger = logging.getLogger("brama_sql")
T = TypeVar("T")


class Admission(enum.Enum):
    """What :meth:`Store.admit` answered a caller."""

    REFUSED = "refused"
    ADMITTED = "admitted"
    """Let through without a probe permit (not half-open, or permits unlimited)."""
    PERMIT = "permit"
    """Let through holding a probe permit of the current episode (claimed now or before)."""


@dataclass(frozen=True)
class Refusal:
    """Why a caller was refused, read right after the refusal: the status and the seconds
    until the circuit next admits a probe (``None`` when unknown: half-open with every
    permit taken; ``0.0`` when it admits calls again by the time of the read)."""

    status: ConnectionStatus
    retry_after: float | None


def _undeclared(_identity: Identity) -> Registration | None:
    return None


@dataclass
class Receipt:
    """What identifies the writes of one call, so that a call whose commit reply was lost can
    find out whether they were committed (:meth:`committed`): a random ``call_id`` written on
    each of its events, and where its last event went (the ``(connection_id, occurred_at)``
    index finds it without an index of its own)."""

    call_id: int = field(default_factory=lambda: secrets.randbits(63))
    connection_id: int | None = None
    occurred_at: datetime | None = None

    def committed(self, conn: Connection) -> bool:
        """Whether the call's events are in the database. Takes the connection's row lock
        first: a lost transaction still committing holds it, so the answer waits for its end.
        A call that wrote no event had nothing to lose."""
        if self.connection_id is None:
            return True
        conn.execute(
            select(connections.c.id).where(connections.c.id == self.connection_id).with_for_update()
        )
        found = conn.execute(
            select(events.c.id)
            .where(
                events.c.connection_id == self.connection_id,
                events.c.occurred_at == self.occurred_at,
                events.c.call_id == self.call_id,
            )
            .limit(1)
        ).first()
        return found is not None


@dataclass
class Journal:
    """What one attempt of a write transaction wrote, for the announcements made once it
    committed: the transitions, in the order logged, and, when listeners want them, their
    events read back before the commit. A retried transaction starts a new journal, so only
    the attempt that committed is announced. ``receipt`` is the call's (shared by its
    attempts): its ``call_id`` is written on every event."""

    receipt: Receipt
    transitions: list[tuple[int, Identity, Occurrence]] = field(default_factory=list)
    events: list[Event] | None = None
    seen: list[tuple[Identity, Circuit, Settings]] = field(default_factory=list)
    """The circuits this attempt left (for the availability cache)."""
    gone: list[Identity] = field(default_factory=list)
    """Connections this attempt removed or reconfigured (dropped from the cache)."""

    def read_back(self, conn: Connection) -> None:
        """Read the transition events this attempt wrote (by the call's ``call_id``)."""
        connection_ids = sorted({connection_id for connection_id, _, _ in self.transitions})
        rows = conn.execute(
            select(events)
            .where(
                events.c.connection_id.in_(connection_ids),
                events.c.kind == Kind.TRANSITION.value,
                events.c.call_id == self.receipt.call_id,
            )
            .order_by(events.c.id)
        ).all()
        self.events = [event_record(row) for row in rows]

    def written(self) -> list[Written]:
        """The transitions with their events (``None`` when they were not read back)."""
        found: Sequence[Event | None] = [None] * len(self.transitions)
        if self.events is not None and len(self.events) == len(self.transitions):
            found = self.events
        return [
            Written(identity, occurrence, event)
            for (_, identity, occurrence), event in zip(self.transitions, found, strict=True)
        ]


class Store:
    """Reads and changes brama_sql's tables, each operation one transaction of
    :class:`~brama_sql.transaction.Transactions`.

    ``clock`` is a callable, or ``None`` to read the database server's clock inside each
    transaction. ``declared`` tells the options of a declared connection: one that has no row
    is registered with them, in the transaction of the first call that needs it.
    ``listeners`` are told of the transitions each write wrote, after it committed.
    """

    def __init__(
        self,
        transactions: Transactions,
        clock: Clock | None,
        declared: Declared = _undeclared,
        listeners: Listeners | None = None,
    ) -> None:
        self.engine = transactions.engine
        self.run = transactions.run
        self._read = transactions.read
        self.clock = clock
        self.declared = declared
        self.listeners = listeners
        self.cache: AvailabilityCache | None = None
        """The opt-in availability cache (needs a Python clock: see :mod:`~.availability`)."""

    def _write(
        self,
        operation: str,
        body: Callable[[Connection, Journal], T],
        receipt: Receipt,
        *,
        confirm: bool = True,
        **options: Any,
    ) -> T:
        """Run ``body`` as a write transaction (see :meth:`Transactions.run`) with a new
        :class:`Journal` per attempt, then announce the transitions of the attempt that
        committed: after the commit, never for a rolled-back attempt, and once."""

        def attempt(conn: Connection) -> tuple[T, Journal]:
            journal = Journal(receipt)
            result = body(conn, journal)
            if journal.transitions and self.listeners is not None and self.listeners.wanted():
                journal.read_back(conn)
            return result, journal

        try:
            result, journal = self.run(
                operation,
                attempt,
                write=True,
                confirm=receipt.committed if confirm else None,
                **options,
            )
        except _NeedsExclusive:
            raise  # nothing was written: the exclusive lock decides next
        except BaseException:
            if self.cache is not None:
                self.cache.clear()  # a write that failed, or whose outcome is unknown
            raise
        if self.cache is not None and self.clock is not None:
            at = read(self.clock)
            for identity, circuit, settings in journal.seen:
                self.cache.remember(identity, circuit, settings, at)
            for identity in journal.gone:
                self.cache.forget(identity)
        if journal.transitions and self.listeners is not None:
            self.listeners.announce(journal.written())
        return result

    def now(self, conn: Executor) -> datetime:
        """The current time, read once the row lock is held (from the database if so set)."""
        if self.clock is not None:
            return read(self.clock)
        assert isinstance(conn, Connection)  # see _reading
        return database_now(conn)

    def _reading(self, operation: str, body: Callable[[Executor], T]) -> T:
        """Run a read ``body`` of prepared statements on the DBAPI connection
        (:meth:`Transactions.read`); with the database's clock (read through SQLAlchemy), on a
        ``Connection``."""
        if self.clock is None:
            return self.run(operation, body, write=False)
        return self._read(operation, body)

    # -- changes ----------------------------------------------------------------------------

    def register(
        self, identity: Identity, registration: Registration, actor: str, *, exist_ok: bool = False
    ) -> tuple[ConnectionStatus, Changes]:
        """Insert a connection in ``unknown`` and log ``registered``; one writer wins a race.

        When it exists already, raise :class:`AlreadyRegisteredError`, or with ``exist_ok``
        return it untouched with how its stored options differ from ``registration``.
        """

        def body(conn: Connection, journal: Journal) -> tuple[ConnectionStatus, Changes]:
            found = _find(conn, identity)
            if found is not None and not exist_ok:
                raise AlreadyRegisteredError(identity.identifier, identity.scope)
            now = self.now(conn)
            if found is None:
                connection_id = _insert(conn, identity, registration, now, actor, journal)
            else:
                connection_id = found.id
            row = _by_id(conn, connection_id)
            differences = {} if found is None else changes(_options(row), registration.as_options())
            return status_of(row, now), differences

        # Another process may insert the same connection between our look and our insert: the
        # unique key refuses the second, which then fails (or, with exist_ok, finds the row).
        return self._write(
            "register",
            body,
            Receipt(),
            on_conflict=lambda error: (
                AlreadyRegisteredError(identity.identifier, identity.scope)
                if _duplicate_identity(error)
                else None
            ),
            retry_if=_duplicate_identity if exist_ok else None,
        )

    def configure(
        self, identity: Identity, wanted: dict[str, object], actor: str
    ) -> ConnectionStatus:
        """Change the options named in ``wanted`` (JSON form, see
        :meth:`~brama_sql.options.Registration.as_options`) under the row lock and log
        ``configured`` with the old and new values; nothing is written when none differs."""

        def body(conn: Connection, journal: Journal) -> ConnectionStatus:
            row = self._lock(conn, identity, actor, journal)
            now = self.now(conn)
            found = changes(_options(row), dict(wanted))
            if found:
                settings = settings_of(row)
                before, tail = _locked_circuit(conn, row, settings)
                new_settings = settings.updated(found["new"])
                outcome = machine.expire(before, settings, now).then(
                    lambda circuit: machine.configure(circuit, new_settings, now, found)
                )
                validation.settings(new_settings)
                conn.execute(
                    update(connections)
                    .where(connections.c.id == row.id)
                    .values(**column_values(found["new"]))
                )
                if new_settings.half_open_max_calls is None:
                    _drop_permits(conn, row.id)  # no longer limited: nothing settles them
                elif new_settings.permit_lifetime < settings.permit_lifetime:
                    _shorten_permits(conn, row.id, new_settings.permit_lifetime)
                _save(conn, row, before, outcome, actor, journal, tail)
                journal.gone.append(identity)
            fresh = _by_id(conn, row.id)
            return status_of(fresh, now)

        return self._write("configure", body, Receipt(), retry_if=_duplicate_identity)

    def stored_options(self, identity: Identity) -> dict[str, object] | None:
        """The options stored for a connection (JSON form), or ``None`` without a row."""

        def body(conn: Connection) -> dict[str, object] | None:
            row = _find(conn, identity)
            return None if row is None else _options(row)

        return self.run("status", body, write=False)

    def change(
        self,
        operation: str,
        identity: Identity,
        step: Step,
        actor: str,
        *,
        report: bool,
        holder: str | None = None,
        shared: bool = False,
    ) -> Outcome:
        """Lock the row, apply a due expiry, then ``step``; write the row and the events.

        For a ``report``, ``step`` learns whether ``holder`` (``actor`` unless given) holds a
        probe permit of the current episode, and that permit is settled (deleted). The events
        name ``actor``. With ``shared`` (a success report), the row's shared lock is tried
        first: when ``step`` leaves the circuit as it is (a healthy success), its event is
        appended to the tail under that lock, without writing the row (:meth:`_unchanged`);
        otherwise the exclusive lock decides.
        """
        holder = actor if holder is None else holder
        if shared:
            try:
                return self._unchanged(operation, identity, step, actor)
            except _NeedsExclusive:
                pass

        def body(conn: Connection, journal: Journal) -> Outcome:
            row = self._lock(conn, identity, actor, journal)
            now = self.now(conn)
            settings = settings_of(row)
            before, tail = _locked_circuit(conn, row, settings)
            expired = machine.expire(before, settings, now)
            permit = None
            if report:
                permit = _held_permit(conn, row, expired.circuit, settings, holder, now)
            outcome = expired.then(lambda circuit: step(circuit, settings, now, permit is not None))
            if permit is not None:
                conn.execute(delete(permits).where(permits.c.id == permit))
            _save(conn, row, before, outcome, actor, journal, tail)
            return outcome

        return self._write(operation, body, Receipt(), retry_if=_duplicate_identity)

    def _unchanged(self, operation: str, identity: Identity, step: Step, actor: str) -> Outcome:
        """A report that leaves the circuit as it is, appended under the row's shared lock
        (healthy successes run side by side; a write that may change the circuit waits for
        them, and they for it). Raises :class:`_NeedsExclusive`, having written nothing, when
        the report may change something: no row yet, a due expiry, a half-open circuit with
        permits to settle, or a step that changes the circuit or logs more than the report.
        It writes no transition, so it has nothing to announce. Once the tail holds more than
        :data:`FOLD_GAP` events, it is folded into the row's tallies."""

        def body(conn: Connection, journal: Journal) -> tuple[Outcome, int]:
            row = _find(conn, identity, lock=True, shared=True)
            if row is None:
                raise _NeedsExclusive
            now = self.now(conn)
            before, settings = circuit_of(row), settings_of(row)
            if before.state is State.HALF_OPEN and settings.permits_limited:
                raise _NeedsExclusive
            if machine.expire(before, settings, now).occurrences:
                raise _NeedsExclusive
            outcome = step(before, settings, now, False)
            if not machine.appendable(before, settings, now, outcome):
                raise _NeedsExclusive
            (occurrence,) = outcome.occurrences
            event_id = _append(conn, row.id, identity_of(row), [occurrence], actor, journal)
            journal.seen.append((identity, before, settings))
            return outcome, _tail_length(conn, row, event_id)

        outcome, tail = self._write(operation, body, Receipt())
        if tail > FOLD_GAP:
            self._fold(identity)
        return outcome

    def _fold(self, identity: Identity) -> None:
        """Fold a connection's tail into its tallies, under the exclusive lock. Best effort:
        the reports are written already, so a failure is logged, and the next write folds."""

        def body(conn: Connection) -> None:
            row = _find(conn, identity, lock=True)
            if row is not None:
                fold(conn, row)

        try:
            self.run("fold", body, write=True)
        except BramaDatabaseError as error:
            logger.warning("brama_sql: folding the tallies of %s failed: %s", identity, error)

    def record_successes(
        self, batches: Sequence[tuple[Identity, Sequence[Buffered]]]
    ) -> list[tuple[Identity, Sequence[Buffered], BramaError]]:
        """Write successes reported earlier (batched reporting), each connection's oldest first,
        each at its own time and with its own actor: the batches of every connection whose
        circuit is still healthy (closed, no failures counted) in one transaction, under their
        rows' shared locks (taken in one order, by identity); then, each in a transaction of
        its own under the exclusive lock, the batches of the others, whose successes go
        through the state machine in turn as if reported when written.

        Raises what the first transaction raises (nothing was written), unless it is a lock
        wait that ran out on a server: one row's lock held too long (a writer stuck holding
        it) then costs only the batches of that row, each batch being written alone. Returns
        the batches that could not be written otherwise, each with its error."""
        batches = sorted(
            ((identity, items) for identity, items in batches if items),
            key=lambda batch: (stored_scope(batch[0].scope), batch[0].identifier),
        )
        if not batches:
            return []

        def healthy(conn: Connection, journal: Journal) -> tuple[list[Identity], list[int]]:
            """The batches appended here, and the lengths of their tails after; the others
            are left in ``batches_left``."""
            batches_left.clear()
            written: list[Identity] = []
            tails: list[int] = []
            for identity, buffered in batches:
                row = _find(conn, identity, lock=True, shared=True)
                occurrences = None if row is None else _healthy_successes(row, buffered)
                if occurrences is None:
                    batches_left.append((identity, buffered))
                    continue
                assert row is not None
                actors = [item.actor for item in buffered]
                event_id = _append(conn, row.id, identity_of(row), occurrences, actors, journal)
                journal.seen.append((identity, circuit_of(row), settings_of(row)))
                written.append(identity)
                tails.append(_tail_length(conn, row, event_id))
            return written, tails

        batches_left: list[tuple[Identity, Sequence[Buffered]]] = []
        try:
            written, tails = self._write("success", healthy, Receipt())
        except BramaDatabaseError as error:
            if len(batches) == 1 or not self._row_locks_apart(error):
                raise
            # One row's lock was held past the wait (a writer stuck holding it): each batch
            # alone, so that only the batches of that row wait for it again and are lost.
            return self._record_each(batches)
        for identity, tail in zip(written, tails, strict=True):
            if tail > FOLD_GAP:
                self._fold(identity)
        dropped: list[tuple[Identity, Sequence[Buffered], BramaError]] = []
        for identity, buffered in batches_left:
            try:
                self._record_one_by_one(identity, buffered)
            except BramaError as error:
                dropped.append((identity, buffered, error))
        return dropped

    def _row_locks_apart(self, error: BaseException) -> bool:
        """Whether ``error`` is a lock wait that ran out on one row of a server (SQLite's one
        write lock holds every row at once: another try would wait for it again)."""
        return self.engine.dialect.name != "sqlite" and _lock_wait_ran_out(error)

    def _record_each(
        self, batches: Sequence[tuple[Identity, Sequence[Buffered]]]
    ) -> list[tuple[Identity, Sequence[Buffered], BramaError]]:
        """:meth:`record_successes` of each batch alone, collecting what is lost."""
        dropped: list[tuple[Identity, Sequence[Buffered], BramaError]] = []
        for identity, buffered in batches:
            try:
                dropped.extend(self.record_successes([(identity, buffered)]))
            except BramaError as error:
                dropped.append((identity, buffered, error))
        return dropped

    def _record_one_by_one(self, identity: Identity, buffered: Sequence[Buffered]) -> None:
        """Write a batch of successes of a circuit that is not healthy (or has no row yet), in
        one transaction under the exclusive lock, each through the state machine."""

        def one_by_one(conn: Connection, journal: Journal) -> None:
            for item in buffered:
                row = self._lock(conn, identity, item.actor, journal)
                settings = settings_of(row)
                before, tail = _locked_circuit(conn, row, settings)
                outcome = machine.expire(before, settings, item.at).then(
                    functools.partial(_late_success, settings=settings, item=item)
                )
                _save(conn, row, before, outcome, item.actor, journal, tail)

        self._write("success", one_by_one, Receipt(), retry_if=_duplicate_identity)

    def claim(self, identity: Identity, actor: str, holder: str | None = None) -> Admission:
        """Whether ``holder`` (``actor`` unless given) may call now; in a half-open circuit
        with limited permits, claim a permit for it. Events it writes name ``actor``.

        A holder that already holds an unexpired permit of this episode keeps it. Expired
        permits and those of earlier episodes are dropped first, so a probe that never
        reported frees its place after ``probe_timeout``.
        """
        holder = actor if holder is None else holder

        def body(conn: Connection, journal: Journal) -> Admission:
            row = self._lock(conn, identity, actor, journal, missing_ok=True)
            if row is None:
                return Admission.REFUSED
            now = self.now(conn)
            settings = settings_of(row)
            before, tail = _locked_circuit(conn, row, settings)
            outcome = machine.expire(before, settings, now)
            _save(conn, row, before, outcome, actor, journal, tail)
            circuit = outcome.circuit
            if circuit.state is not State.HALF_OPEN or not settings.permits_limited:
                return _admitted(circuit.state)
            _drop_permits(
                conn,
                row.id,
                or_(permits.c.episode != circuit.episode, permits.c.expires_at <= now),
            )
            active, held = _live_permits(conn, row.id, circuit.episode, holder, now)
            if held is not None:
                return Admission.PERMIT
            if not machine.may_claim_permit(settings, active):
                return Admission.REFUSED
            conn.execute(
                insert(permits).values(
                    connection_id=row.id,
                    episode=circuit.episode,
                    holder=holder,
                    claimed_at=now,
                    expires_at=now + settings.permit_lifetime,
                )
            )
            return Admission.PERMIT

        # No look-up after a lost commit reply: the claim is asked again, which keeps a
        # permit the lost commit claimed (its holder asks again).
        return self._write(
            "available", body, Receipt(), confirm=False, retry_if=_duplicate_identity
        )

    def release(self, identity: Identity, holder: str) -> None:
        """Delete the probe permits ``holder`` holds on the connection, without a report (a
        call that counts as neither success nor failure hands its place back). Writes no
        event; does nothing when the connection is gone."""

        def body(conn: Connection) -> None:
            row = _find(conn, identity, lock=True)
            if row is not None:
                _drop_permits(conn, row.id, permits.c.holder == holder)

        self.run("release", body, write=True)

    def unregister(self, identity: Identity, actor: str) -> bool:
        """Delete the connection and log ``unregistered``; ``False`` when it did not exist."""

        def body(conn: Connection, journal: Journal) -> bool:
            row = _find(conn, identity, lock=True)
            if row is None:
                return False
            _remove(conn, row, self.now(conn), Kind.UNREGISTERED, actor, journal)
            return True

        return self._write("unregister", body, Receipt())

    def cleanup(self, inactive_after: timedelta, actor: str) -> int:
        """Remove connections whose last activity is older than ``inactive_after``; return
        exactly how many were removed.

        Activity is the newest event, or a due expiry that no write has persisted yet. Each
        candidate is removed in a transaction of its own. A row locked elsewhere belongs to a
        call in progress, so it is active: it is skipped, without waiting (``SKIP LOCKED`` on
        PostgreSQL and MariaDB/MySQL). On SQLite the whole database is one lock: when another
        writer holds it past the lock wait limit, the run ends there, the remaining candidates
        are left for the next one, and the count of those removed is returned. Any other
        database failure raises (the count removed so far is logged).
        """

        def candidates(conn: Connection) -> list[Identity]:
            rows = conn.execute(idle_since(self.now(conn) - inactive_after))
            return [Identity(row.identifier, api_scope(row.scope)) for row in rows]

        def remove_if_idle(conn: Connection, journal: Journal, identity: Identity) -> bool:
            row = conn.execute(
                select(connections).where(identity.where()).with_for_update(skip_locked=True)
            ).one_or_none()
            if row is None:
                return False  # removed meanwhile, or locked by a call in progress: active
            now = self.now(conn)
            last = _folded(conn, row).last_event_at or row.registered_at
            expires_at = circuit_of(row).expires_at(settings_of(row))
            if expires_at is not None and expires_at <= now:
                last = max(last, expires_at)
            if last >= now - inactive_after:
                return False
            _remove(conn, row, now, Kind.REMOVED, actor, journal)
            return True

        removed = 0
        for identity in self.run("cleanup", candidates, write=False):
            try:
                gone = self._write(
                    "cleanup",
                    functools.partial(remove_if_idle, identity=identity),
                    Receipt(),
                    confirm=False,
                )
            except BramaDatabaseError as error:
                if not _lock_wait_ran_out(error):
                    if removed:
                        logger.warning("cleanup() removed %d connections, then failed", removed)
                    raise
                logger.warning(
                    "cleanup() removed %d connections and leaves the others for its next run: "
                    "the database stayed locked by another writer (%s)",
                    removed,
                    error,
                )
                break
            removed += gone
        return removed

    @overload
    def _lock(
        self,
        conn: Connection,
        identity: Identity,
        actor: str,
        journal: Journal,
        missing_ok: Literal[False] = ...,
    ) -> Row[Any]: ...

    @overload
    def _lock(
        self,
        conn: Connection,
        identity: Identity,
        actor: str,
        journal: Journal,
        missing_ok: bool,
    ) -> Row[Any] | None: ...

    def _lock(
        self,
        conn: Connection,
        identity: Identity,
        actor: str,
        journal: Journal,
        missing_ok: bool = False,
    ) -> Row[Any] | None:
        """Lock the connection's row and return it. A declared connection without a row is
        registered first, in this transaction (a racing process that inserts it first makes
        this transaction fail on the unique key; it is then run again and finds the row).
        Without a row: ``None`` when ``missing_ok``, else :class:`NotRegisteredError`."""
        row = _find(conn, identity, lock=True)
        if row is None:
            registration = self.declared(identity)
            if registration is not None:
                now = self.now(conn)
                _insert(conn, identity, registration, now, actor, journal, reason=DECLARED)
                row = _find(conn, identity, lock=True)
        if row is None and not missing_ok:
            raise NotRegisteredError(identity.identifier, identity.scope)
        return row

    # -- reads ------------------------------------------------------------------------------

    def status(self, identity: Identity, actor: str) -> ConnectionStatus:
        """The connection's status with the tallies of its log; raises if it is not registered
        (a declared connection without a row is registered first, by ``actor``)."""

        def body(conn: Executor) -> ConnectionStatus | None:
            row = execute(conn, STATUS, identity.parameters()).one_or_none()
            if row is None:
                if self.declared(identity) is None:
                    raise NotRegisteredError(identity.identifier, identity.scope)
                return None
            return status_of(row, self.now(conn))

        def register_declared(conn: Connection, journal: Journal) -> ConnectionStatus:
            row = self._lock(conn, identity, actor, journal)
            fresh = _by_id(conn, row.id)
            return status_of(fresh, self.now(conn))

        found = self._reading("status", body)
        if found is not None:
            return found
        return self._write("status", register_declared, Receipt(), retry_if=_duplicate_identity)

    def available(self, identity: Identity, actor: str) -> bool:
        """Whether the circuit lets ``actor`` call now; ``False`` for an unknown connection.
        See :meth:`admit`."""
        return self.admit(identity, actor) is not Admission.REFUSED

    def admit(self, identity: Identity, actor: str, holder: str | None = None) -> Admission:
        """Whether the circuit lets ``holder`` (``actor`` unless given) call now, and whether
        with a probe permit; refused for an unknown connection.

        Reads only, unless the circuit is half-open with limited permits and a permit may be
        free: then :meth:`claim` decides under the row lock. A caller that holds no permit
        while all are taken is refused from the read alone, without queueing for the lock.
        """
        holder = actor if holder is None else holder
        if self.cache is not None and self.clock is not None:
            cached = self.cache.answer(identity, read(self.clock))
            if cached is not None:
                return Admission.ADMITTED if cached else Admission.REFUSED

        # Without the cache, only the columns admission needs (each costs the driver its
        # parsing, on MariaDB its metadata too); the cache keeps the whole circuit.
        query = ADMISSION if self.cache is None else FIND_CIRCUIT

        def body(conn: Executor) -> Admission | None:
            row = execute(conn, query, identity.parameters()).one_or_none()
            if row is None:  # a declared connection is registered by claim()
                return None if self.declared(identity) is not None else Admission.REFUSED
            now = self.now(conn)
            if self.cache is not None:
                self.cache.remember(identity, circuit_of(row), settings_of(row), now)
            return _admission(conn, row, holder, now)

        answer = self._reading("available", body)
        return self.claim(identity, actor, holder) if answer is None else answer

    def refusal(self, identity: Identity) -> Refusal:
        """The status of a connection that refused a caller, and when it next admits a
        probe; raises :class:`NotRegisteredError` when it has no row."""

        def body(conn: Executor) -> tuple[Row[Any], datetime]:
            row = execute(conn, STATUS, identity.parameters()).one_or_none()
            if row is None:
                raise NotRegisteredError(identity.identifier, identity.scope)
            return row, self.now(conn)

        row, now = self._reading("status", body)
        settings = settings_of(row)
        circuit = machine.current(circuit_of(row), settings, now)
        expires_at = circuit.expires_at(settings)
        retry_after: float | None = 0.0
        if expires_at is not None:
            retry_after = max(0.0, (expires_at - now).total_seconds())
        elif circuit.state is State.HALF_OPEN and settings.permits_limited:
            retry_after = None  # every permit is taken: their holders decide when
        elif circuit.state is State.FORCED_OPEN:
            retry_after = None  # until someone closes or resets it
        return Refusal(status_of(row, now), retry_after)

    def statuses(self, scope: str | None) -> list[ConnectionStatus]:
        """The status of every connection (of the stored ``scope`` only, unless ``None``), by
        scope then identifier."""
        parameters = {} if scope is None else {"scope": scope}
        if self.engine.dialect.name == "mysql":
            return self._statuses_row_by_row(parameters)

        def body(conn: Executor) -> tuple[list[Any], datetime]:
            statement = STATUSES if scope is None else STATUSES_IN_SCOPE
            return execute(conn, statement, parameters).all(), self.now(conn)

        # The records are made after the read: a long transaction would sit idle meanwhile.
        rows, now = self._reading("connections", body)
        return [status_of(row, now) for row in rows]

    def _statuses_row_by_row(self, parameters: dict[str, str]) -> list[ConnectionStatus]:
        """:meth:`statuses` on MariaDB/MySQL, which run a tail subquery per row by scanning the
        connection's whole index range (a correlated bound is no range to them): read the
        rows, then, from the same snapshot, the tails of those whose newest event is past
        ``tallied_through`` (each a range on ``(connection_id, id)``; the newest event is one
        index dive)."""

        def body(conn: Connection) -> tuple[list[Any], dict[int, Tail], datetime]:
            conn.execution_options(isolation_level="REPEATABLE READ")
            statement = ROWS_WITH_NEWEST if not parameters else ROWS_WITH_NEWEST_IN_SCOPE
            rows = execute(conn, statement, parameters).all()
            tails: dict[int, Tail] = {}
            for row in rows:
                if (row.newest_event or 0) > row.tallied_through:
                    count, latest = execute(
                        conn, TAIL, {"row_id": row.id, "through": row.tallied_through}
                    ).one()
                    tails[row.id] = (int(count), latest)
            return rows, tails, self.now(conn)

        rows, tails, now = self.run("connections", body, write=False)
        return [status_of(row, now, tails.get(row.id, (0, None))) for row in rows]

    def events(self, condition: ColumnElement[bool], limit: int | None) -> list[Event]:
        """Logged events matching ``condition``, oldest first, at most ``limit`` of them."""

        def body(conn: Connection) -> Sequence[Row[Any]]:
            query = select(events).where(condition).order_by(events.c.id)
            if limit is not None:
                query = query.limit(limit)
            return conn.execute(query).all()

        # The records are made after the transaction: a long one would sit idle meanwhile.
        return [event_record(row) for row in self.run("events", body, write=False)]

    def stream_events(
        self,
        condition: ColumnElement[bool],
        *,
        newest: int | None,
        limit: int | None,
        page_size: int,
        every_scope_of: bool = False,
    ) -> Iterator[Event]:
        """Logged events matching ``condition``, oldest first, read in pages of ``page_size``
        by id (keyset: each page is one short transaction starting after the last id seen), so
        at most one page is held whatever the log's length. ``newest``: only the newest that
        many; ``limit``: at most that many (the first ones).

        ``every_scope_of``: ``condition`` names an identifier but no scope. Its events are then
        read as one keyset stream per scope, each a range of ``(identifier, scope, id)``, merged
        by id: a page of the identifier across scopes would have to sort all its events."""
        after = 0
        if newest is not None:
            if newest == 0:
                return

            def first_of_newest(conn: Connection) -> int | None:
                query = select(events.c.id).where(condition).order_by(events.c.id.desc())
                return conn.execute(query.limit(1).offset(newest - 1)).scalar_one_or_none()

            first = self.run("events", first_of_newest, write=False)
            after = 0 if first is None else first - 1
        if every_scope_of:

            def scopes(conn: Connection) -> list[str]:
                found = conn.execute(select(events.c.scope).where(condition).distinct())
                return [scope for (scope,) in found]

            streams = [
                self._pages(condition & (events.c.scope == scope), after, page_size)
                for scope in self.run("events", scopes, write=False)
            ]
            rows: Iterator[Row[Any]] = heapq.merge(*streams, key=lambda row: int(row.id))
        else:
            rows = self._pages(condition, after, page_size)
        for row in itertools.islice(rows, limit):
            yield event_record(row)

    def _pages(
        self, condition: ColumnElement[bool], after: int, page_size: int
    ) -> Iterator[Row[Any]]:
        """The log's rows matching ``condition`` with ids above ``after``, in id order, a page
        of ``page_size`` per transaction."""
        while True:

            def page(conn: Connection, after: int = after) -> Sequence[Row[Any]]:
                query = select(events).where(condition, events.c.id > after)
                return conn.execute(query.order_by(events.c.id).limit(page_size)).all()

            rows = self.run("events", page, write=False)
            yield from rows
            if len(rows) < page_size:
                return
            after = rows[-1].id


# -- row helpers ----------------------------------------------------------------------------


PAGE_SIZE = 500
"""Events per page of :meth:`Store.stream_events`: the most it holds at once."""

FOLD_GAP = 1000
"""A healthy success that leaves its connection's tail holding more events than this folds the
tail into the tallies after it commits, so reads count no more than this many (plus those of
calls in flight). Ids are global: a success whose event id is no further than this past its
row's ``tallied_through`` knows without counting; past it, it counts its tail in its own
transaction (a range of the connection's own events), since other connections' events fill
the gap in a busy database: folding on the gap of ids alone cost every healthy success of a
fleet of a hundred connections a second write transaction."""


@dataclass(frozen=True)
class Buffered:
    """A success report kept back by batched reporting: when it happened, who made it, why."""

    at: datetime
    actor: str
    reason: str | None
    duration: float | None = None


def _late_success(circuit: Circuit, settings: Settings, item: Buffered) -> Outcome:
    return machine.record(
        circuit, settings, Kind.SUCCESS, item.at, item.reason, duration=item.duration
    )


def _healthy_successes(row: Row[Any], buffered: Sequence[Buffered]) -> list[Occurrence] | None:
    """The events of a batch of successes on a row read under its shared lock, or ``None``
    when they may change something (the circuit is not closed with no failures counted, or a
    success would do more than log itself): the exclusive lock must then decide."""
    before, settings = circuit_of(row), settings_of(row)
    if before.state is not State.CLOSED or before.failure_count:
        return None
    occurrences: list[Occurrence] = []
    for item in buffered:
        outcome = _late_success(before, settings, item)
        if outcome.circuit != before or len(outcome.occurrences) != 1:
            return None
        occurrences.extend(outcome.occurrences)
    return occurrences


class _NeedsExclusive(Exception):
    """A report under the shared lock that may change the circuit: nothing was written, the
    exclusive lock decides instead."""


def _duplicate_identity(error: IntegrityError) -> bool:
    """Whether ``error`` is the unique key of ``(identifier, scope)`` refusing a duplicate."""
    message = str(error.orig)
    return "uq_brama_connections" in message or "brama_connections.identifier" in message


def _admission(conn: Executor, row: Any, holder: str, now: datetime) -> Admission | None:
    """Whether the circuit of ``row`` (the columns of :data:`~brama_sql.rows.ADMISSION`) lets
    ``holder`` call at ``now``; ``None`` when a probe permit may be free, for
    :meth:`Store.claim` to decide under the row lock."""
    stored = state_of(row.state)
    period = timedelta(seconds=row.expiry if row.open_period is None else row.open_period)
    state = machine.state_at(stored, row.opened_at, period, now)
    limit = row.half_open_max_calls
    if state is not State.HALF_OPEN or limit is None:
        return _admitted(state)
    if state is stored:  # the expiry is persisted, so permits may exist
        active, held = _live_permits(conn, row.id, row.episode, holder, now)
        if held is None and not machine.permit_free(limit, active):
            return Admission.REFUSED
    return None


def _admitted(state: State) -> Admission:
    return Admission.ADMITTED if machine.is_available(state) else Admission.REFUSED


def _insert(
    conn: Connection,
    identity: Identity,
    registration: Registration,
    now: datetime,
    actor: str,
    journal: Journal,
    reason: str | None = None,
) -> int:
    """Insert a connection's row in the initial state, log ``registered``; return its id."""
    settings = registration.settings
    outcome = machine.register(settings, now, reason)
    circuit = outcome.circuit
    inserted = conn.execute(
        insert(connections).values(
            identifier=identity.identifier,
            scope=stored_scope(identity.scope),
            state=circuit.state.value,
            failure_count=circuit.failure_count,
            opened_at=circuit.opened_at,
            episode=circuit.episode,
            metadata=registration.metadata,
            registered_at=now,
            **settings.columns(),
            **Tally().adding_all(_kinds(outcome.occurrences)).columns(),
        )
    )
    assert inserted.inserted_primary_key is not None
    connection_id: int = inserted.inserted_primary_key[0]
    event_id = _append(conn, connection_id, identity, outcome.occurrences, actor, journal)
    conn.execute(  # its tallies count its registration
        update(connections)
        .where(connections.c.id == connection_id)
        .values(tallied_through=event_id)
    )
    return connection_id


def _options(row: Row[Any]) -> dict[str, Any]:
    """The options a ``brama_connections`` row stores, in their JSON form."""
    return Registration(dict(row.metadata), settings_of(row)).as_options()


def _by_id(conn: Connection, connection_id: int) -> Row[Any]:
    """The row with id ``connection_id`` (which must exist), with its tail (:func:`with_tail`)."""
    return conn.execute(with_tail(connections.c.id == connection_id)).one()


def _find(
    conn: Connection, identity: Identity, lock: bool = False, shared: bool = False
) -> Row[Any] | None:
    """The connection's row; with ``lock``, its exclusive lock (``shared``: its shared one)."""
    query = FIND if not lock else FIND_FOR_SHARE if shared else FIND_FOR_UPDATE
    found: Row[Any] | None = execute(conn, query, identity.parameters()).one_or_none()
    return found


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
    return _live_permits(conn, row.id, circuit.episode, actor, now)[1]


def _live_permits(
    conn: Executor, connection_id: int, episode: int, actor: str, now: datetime
) -> tuple[int, int | None]:
    """How many unexpired permits of ``episode`` are held, and the id of ``actor``'s one."""
    active, held = execute(
        conn,
        LIVE_PERMITS,
        {"row_id": connection_id, "episode": episode, "holder": actor, "now": now},
    ).one()
    return int(active), held


LIVE_PERMITS = Prepared(
    select(func.count(), func.max(case((permits.c.holder == bindparam("holder"), permits.c.id))))
    .select_from(permits)
    .where(
        permits.c.connection_id == bindparam("row_id"),
        permits.c.episode == bindparam("episode"),
        permits.c.expires_at > bindparam("now", type_=UTCDateTime()),
    )
)
"""How many unexpired permits of an episode are held, and the id of one holder's."""


def _save(
    conn: Connection,
    row: Row[Any],
    before: Circuit,
    outcome: Outcome,
    actor: str,
    journal: Journal,
    tail: Tail | None = None,
) -> None:
    """Write the row (circuit and tallies) if anything happened, drop permits once it leaves
    half-open, log."""
    after = outcome.circuit
    journal.seen.append((identity_of(row), after, settings_of(row)))
    if (
        row.half_open_max_calls is not None
        and after.state is not State.HALF_OPEN
        and any(occurrence.from_state is State.HALF_OPEN for occurrence in outcome.occurrences)
    ):
        _drop_permits(conn, row.id)
    if after == before and not outcome.occurrences:
        return
    values = {
        "row_id": row.id,
        "state": after.state.value,
        "failure_count": after.failure_count,
        "opened_at": after.opened_at,
        "episode": after.episode,
        "open_period": after.open_period,
        "window_counts": None if after.window is None else after.window.as_json(),
    }
    kinds = _kinds(outcome.occurrences)
    _append(conn, row.id, identity_of(row), outcome.occurrences, actor, journal)
    if tail is not None:
        execute(
            conn,
            SAVE_ROW,
            {**values, **Tally.of_row(row).with_tail(*tail).adding_all(kinds).columns()},
        )
        return
    # The tail not read yet (no rate policy to decide on it): folded in by the UPDATE itself.
    own = Tally.of_row(row).adding_all(kinds).columns()
    for name in TAIL_FOLDED:
        values[f"own_{name}"] = own.pop(name)
    values.update(own, through=row.tallied_through, call_id=journal.receipt.call_id)
    execute(conn, SAVE_ROW_FOLDING, values)


NEWEST_EVENT = newest_event_of(bindparam("row_id"))
"""The id of the connection ``row_id``'s newest event (``0`` without events)."""


def _in_log_order(query: Select[Any]) -> Select[Any]:
    """``query`` over ``brama_events`` read through the ``(connection_id, id)`` index on
    MariaDB/MySQL, which may otherwise range over the primary key (``id > ...``) through every
    connection's events for a range of one connection's."""
    return query.with_hint(events, "FORCE INDEX (ix_brama_events_connection_id_id)", "mysql")


TAIL = Prepared(
    _in_log_order(select(func.count(), latest_occurred_at())).where(
        tail_of(bindparam("row_id"), bindparam("through"))
    )
)
"""How many events the connection ``row_id`` has after ``through``, and the latest's time."""
SAVE_ROW = Prepared(
    update(connections)
    .where(connections.c.id == bindparam("row_id"))
    .values(tallied_through=NEWEST_EVENT)
)
"""Write a locked row: its tallies count every event up to its newest; the circuit and the
tallies come as execution parameters named like the columns (built once, compiled once)."""
TAIL_RANGE = tail_of(bindparam("row_id"), bindparam("through")) & or_(
    events.c.call_id.is_(None), events.c.call_id != bindparam("call_id")
)
"""The row's tail when its exclusive write has appended events of its own (call ``call_id``):
the events after ``through`` (its ``tallied_through`` when locked) that are not this call's."""
TAIL_FOLDED = ("successes", "last_success_at", "last_event_at")
"""The tally columns a tail of healthy successes changes."""


def _later(own: Any, tail_latest: Any) -> Any:
    """The later of the time ``own`` (may be ``NULL``) and the tail's latest (``NULL`` without a
    tail), on every dialect (``GREATEST`` differs on ``NULL``)."""
    return case((or_(own.is_(None), tail_latest > own), func.coalesce(tail_latest, own)), else_=own)


def _over_tail(column: Any) -> Any:
    """A scalar subquery of ``column`` over the tail's events (:data:`TAIL_RANGE`)."""
    return _in_log_order(select(column)).where(TAIL_RANGE).scalar_subquery()


_OWN_SUCCESSES = bindparam("own_successes", type_=connections.c.successes.type)
_OWN_LAST_SUCCESS_AT = bindparam("own_last_success_at", type_=UTCDateTime())
_OWN_LAST_EVENT_AT = bindparam("own_last_event_at", type_=UTCDateTime())
_TAIL_SUMMARY = (
    select(
        bindparam("row_id", type_=connections.c.id.type).label("row_id"),
        func.count().label("successes"),
        latest_occurred_at().label("latest"),
    )
    .where(TAIL_RANGE)
    .subquery("tail")
)
"""The tail's count and latest time, read once (PostgreSQL's ``UPDATE ... FROM``), with the
row's id to join on."""
SAVE_ROW_FOLDING = Prepared(
    update(connections)
    .where(connections.c.id == bindparam("row_id"))
    .values(
        tallied_through=NEWEST_EVENT,
        successes=_OWN_SUCCESSES + _over_tail(func.count()),
        last_success_at=_later(_OWN_LAST_SUCCESS_AT, _over_tail(latest_occurred_at())),
        last_event_at=_later(_OWN_LAST_EVENT_AT, _over_tail(latest_occurred_at())),
    ),
    variants={
        # The tail summarised by one subquery in the UPDATE's FROM (an aggregate: exactly one
        # row), where the portable statement reads it by five scalar subqueries.
        "postgresql": update(connections)
        .where(connections.c.id == bindparam("row_id"), connections.c.id == _TAIL_SUMMARY.c.row_id)
        .values(
            tallied_through=NEWEST_EVENT,
            successes=_OWN_SUCCESSES + _TAIL_SUMMARY.c.successes,
            last_success_at=_later(_OWN_LAST_SUCCESS_AT, _TAIL_SUMMARY.c.latest),
            last_event_at=_later(_OWN_LAST_EVENT_AT, _TAIL_SUMMARY.c.latest),
        )
    },
)
"""Write a row locked exclusively as :data:`SAVE_ROW` does, folding in the tail its UPDATE
finds (one round trip less than reading it first): the tail's successes and latest time are
added to the tallies the call computed from the row and its own events (``own_*``). Under
the exclusive lock no healthy success can join the tail, and the UPDATE's statement sees
every one committed before (READ COMMITTED; SQLite has one writer)."""
INSERT_EVENT = Prepared(insert(events))
NEWEST_EVENT_OF_ROW = (
    _in_log_order(select(events.c.id))
    .where(events.c.connection_id == connections.c.id)
    .order_by(events.c.id.desc())
    .limit(1)
    .scalar_subquery()
    .label("newest_event")
)
"""The id of each row's newest event (one dive into ``(connection_id, id)`` per row)."""
_ROWS_WITH_NEWEST = select(
    connections.c.id, connections.c.tallied_through, *status_columns(), NEWEST_EVENT_OF_ROW
).order_by(*LISTED)
ROWS_WITH_NEWEST = Prepared(_ROWS_WITH_NEWEST)
"""Every connection's row with its newest event's id, in ``connections()`` order."""
ROWS_WITH_NEWEST_IN_SCOPE = Prepared(
    _ROWS_WITH_NEWEST.where(connections.c.scope == bindparam("scope"))
)
"""The rows of one stored ``scope`` with their newest event's id, in ``connections()`` order."""


def _folded(conn: Connection, row: Row[Any], tail: Tail | None = None) -> Tally:
    """The row's tallies with its tail folded in: the healthy successes appended under the
    shared lock since ``tallied_through`` (read here unless ``tail`` was read already). Only
    under the exclusive row lock (no tail event can be added meanwhile)."""
    if tail is None:
        count, latest = execute(
            conn, TAIL, {"row_id": row.id, "through": row.tallied_through}
        ).one()
        tail = (int(count), latest)
    return Tally.of_row(row).with_tail(*tail)


def fold(conn: Connection, row: Row[Any]) -> None:
    """Fold the tail of a row locked exclusively into its tallies (and its rate window)."""
    settings = settings_of(row)
    circuit, tail = _locked_circuit(conn, row, settings)
    values = {"row_id": row.id, **_folded(conn, row, tail).columns()}
    if settings.rate_policy:
        window = circuit.window
        values["window_counts"] = None if window is None else window.as_json()
    execute(conn, SAVE_ROW, values)


TAIL_REPORTS = Prepared(
    _in_log_order(select(events.c.occurred_at, events.c.duration))
    .where(tail_of(bindparam("row_id"), bindparam("through")))
    .order_by(events.c.id)
)
"""The reports of the connection ``row_id`` after ``through``, oldest first."""


def _locked_circuit(
    conn: Connection, row: Row[Any], settings: Settings
) -> tuple[Circuit, Tail | None]:
    """The circuit of a row locked exclusively, with a rate policy on its tail of successes
    counted in the window (:func:`~brama_sql.circuit.fold_tail`): what every write under the
    exclusive lock starts from, since it moves ``tallied_through`` past the tail. Also the
    tail's count and latest time when it was read (for :func:`_folded`), else ``None``."""
    circuit = circuit_of(row)
    if not settings.rate_policy:
        return circuit, None
    tail = execute(conn, TAIL_REPORTS, {"row_id": row.id, "through": row.tallied_through}).all()
    folded = machine.fold_tail(circuit, settings, [(at, duration) for at, duration in tail])
    return folded, (len(tail), max((at for at, _ in tail), default=None))


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


def _shorten_permits(conn: Connection, connection_id: int, lifetime: timedelta) -> None:
    """Make claimed permits expire ``lifetime`` after they were claimed, if that is sooner."""
    claimed = conn.execute(
        select(permits.c.id, permits.c.claimed_at, permits.c.expires_at).where(
            permits.c.connection_id == connection_id
        )
    ).all()
    for permit in claimed:
        if permit.claimed_at + lifetime < permit.expires_at:
            conn.execute(
                update(permits)
                .where(permits.c.id == permit.id)
                .values(expires_at=permit.claimed_at + lifetime)
            )


def _remove(
    conn: Connection,
    row: Row[Any],
    now: datetime,
    kind: Kind,
    actor: str,
    journal: Journal,
) -> None:
    """Persist a due expiry, delete the row and its permits, log ``kind``."""
    before, tail = _locked_circuit(conn, row, settings_of(row))
    outcome = machine.expire(before, settings_of(row), now)
    _save(conn, row, before, outcome, actor, journal, tail)
    _drop_permits(conn, row.id)
    conn.execute(delete(connections).where(connections.c.id == row.id))
    farewell = Occurrence(kind, now, outcome.circuit.failure_count)
    _append(conn, row.id, identity_of(row), [farewell], actor, journal)
    journal.gone.append(identity_of(row))


def _tail_length(conn: Connection, row: Row[Any], event_id: int) -> int:
    """How many events the tail of a row read under the shared lock holds after this
    transaction appended to it (``event_id``: the id of its one event, 0 for several). Ids are
    global, so the gap from ``tallied_through`` is at least the count: close enough, it does;
    past :data:`FOLD_GAP`, or for several events, the tail is counted (a range of the
    connection's own events)."""
    gap: int = event_id - row.tallied_through
    if 0 < gap <= FOLD_GAP:
        return gap
    count, _ = execute(conn, TAIL, {"row_id": row.id, "through": row.tallied_through}).one()
    return int(count)


def _append(
    conn: Connection,
    connection_id: int,
    identity: Identity,
    occurrences: Sequence[Occurrence],
    actor: str | Sequence[str],
    journal: Journal,
) -> int:
    """Insert the events, oldest first, each with the call's ``call_id`` and ``actor`` (or
    its own of ``actor``, one per occurrence); note in the call's receipt where the last one
    went, and in the ``journal`` the transitions. Returns the id of a single event (else 0)."""
    actors = [actor] * len(occurrences) if isinstance(actor, str) else list(actor)
    if not occurrences:
        return 0
    journal.transitions.extend(
        (connection_id, identity, occurrence)
        for occurrence in occurrences
        if occurrence.kind is Kind.TRANSITION
    )
    receipt = journal.receipt
    receipt.connection_id = connection_id
    receipt.occurred_at = occurrences[-1].occurred_at
    rows = [
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
            "duration": occurrence.duration,
            "actor": writer,
            "details": occurrence.details,
            "call_id": receipt.call_id,
        }
        for occurrence, writer in zip(occurrences, actors, strict=True)
    ]
    if len(rows) > 1:
        conn.execute(INSERT_EVENT.statement, rows)
        return 0
    inserted = execute(conn, INSERT_EVENT, rows[0])
    assert inserted.inserted_primary_key is not None
    event_id: int = inserted.inserted_primary_key[0]
    return event_id


def _kinds(occurrences: Sequence[Occurrence]) -> list[Added]:
    return [
        (
            occurrence.kind,
            occurrence.occurred_at,
            transition_key(_value(occurrence.cause), _value(occurrence.to_state))
            if occurrence.kind is Kind.TRANSITION
            else None,
        )
        for occurrence in occurrences
    ]


def _value(member: State | machine.Cause | None) -> str | None:
    return None if member is None else member.value


def _last_activity() -> Any:
    """The time of a connection's newest event that its tallies count (or its registration)."""
    return func.coalesce(connections.c.last_event_at, connections.c.registered_at)


def idle_since(cutoff: datetime) -> Select[Any]:
    """The identities of the connections with no activity since ``cutoff`` that their
    tallies count (:func:`_last_activity`), nor in their tail: :meth:`Store.cleanup`'s
    candidates, in registration order."""
    recent_tail = exists().where(
        tail_of(connections.c.id, connections.c.tallied_through),
        events.c.occurred_at >= cutoff,
    )
    return (
        select(connections.c.identifier, connections.c.scope)
        .where(_last_activity() < cutoff, ~recent_tail)
        .order_by(connections.c.id)
    )


SQLITE_BUSY_CODES = {5, 6}
"""SQLITE_BUSY and SQLITE_LOCKED."""
LOCK_NOT_AVAILABLE = "55P03"
"""PostgreSQL's SQLSTATE of a lock wait that reached ``lock_timeout``."""
MYSQL_LOCK_WAIT_TIMEOUT = 1205


def _lock_wait_ran_out(error: BaseException) -> bool:
    """Whether ``error``, or an error that caused it, is a lock wait that reached its limit:
    SQLite's busy database, PostgreSQL's ``lock_timeout``, MySQL's lock wait timeout."""
    seen: BaseException | None = error
    while seen is not None:
        original = getattr(seen, "orig", None) or seen
        if getattr(original, "sqlite_errorcode", None) in SQLITE_BUSY_CODES:
            return True
        if "database is locked" in str(original) or "database table is locked" in str(original):
            return True  # SQLite before Python 3.11 names no error code
        if getattr(original, "sqlstate", None) == LOCK_NOT_AVAILABLE:
            return True
        args: tuple[Any, ...] = getattr(original, "args", ())
        if args and args[0] == MYSQL_LOCK_WAIT_TIMEOUT:
            return True
        seen = seen.__cause__
    return False
