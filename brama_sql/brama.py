"""The public entry point: :class:`Brama`, one object per application and database."""

from __future__ import annotations

import contextlib
import enum
import functools
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, TypeVar, get_args

from alembic.util.exc import CommandError as AlembicError
from sqlalchemy import ColumnElement, true
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.pool import StaticPool

from brama_sql import circuit as machine
from brama_sql import engine as engines
from brama_sql import migration, reporting, validation
from brama_sql.availability import AvailabilityCache
from brama_sql.batching import Batcher
from brama_sql.circuit import Cause, Kind, Settings
from brama_sql.cleaner import Cleaner
from brama_sql.clock import DATABASE, Clock, system_clock
from brama_sql.clock import read as read_clock
from brama_sql.declarations import Declarations
from brama_sql.errors import (
    ArgumentTypeError,
    BramaDatabaseError,
    InvalidArgumentError,
    ReportOutcomeUnknownError,
    SchemaError,
)
from brama_sql.guard import Exclude, Exclusion, FirstUses, Guard, checked_callable, protect
from brama_sql.listeners import Callback, Listener, Listeners
from brama_sql.options import Registration, changes, describe
from brama_sql.permit import Permit, new_token, tagged
from brama_sql.policies import Policies
from brama_sql.pruning import BATCH_SIZE, Pruner
from brama_sql.records import ConnectionStatus, Event, Report, Transition
from brama_sql.rows import Identity
from brama_sql.schema import connections, events, stored_scope
from brama_sql.store import PAGE_SIZE, Admission, Buffered, Refusal, Store
from brama_sql.transaction import Transactions

if TYPE_CHECKING:
    from typing_extensions import Unpack

logger = logging.getLogger("brama_sql")

P = ParamSpec("P")
R = TypeVar("R")

DatabaseErrorPolicy = Literal["raise", "allow", "deny"]
POLICIES: tuple[str, ...] = get_args(DatabaseErrorPolicy)


class _Every(enum.Enum):
    """The type of :data:`EVERY_SCOPE`."""

    EVERY_SCOPE = "every scope"


EVERY_SCOPE = _Every.EVERY_SCOPE
"""The default ``scope`` of :meth:`Brama.connections` and :meth:`Brama.events`: no filter."""


class _Unset(enum.Enum):
    """An option of :meth:`Brama.register` that was left out (``None`` has a meaning there)."""

    UNSET = "unset"


UNSET = _Unset.UNSET
OPTION_NAMES = frozenset(
    {"scope", "metadata", "failure_threshold", "expiry", "half_open_max_calls", "probe_timeout"}
    | set(validation.POLICY_CHECKS)
)
"""The options a declared connection may name (see :meth:`Brama.declare`)."""


class Brama:
    """Circuit breakers for an application's external dependencies, kept in SQL.

    ``url`` is a database URL or an SQLAlchemy :class:`~sqlalchemy.engine.Engine`. The keyword
    options are the defaults of :meth:`register` (``failure_threshold``, ``expiry``,
    ``half_open_max_calls``, ``probe_timeout``), how long a connection may stay idle before
    :meth:`cleanup` removes it (``inactive_after``; ``None`` never removes), where the time
    comes from (``clock``: a callable returning an aware datetime, or ``"database"`` for the
    server's clock), what :meth:`available` and the reports do when the database fails
    (``on_db_error``: ``"raise"``, ``"allow"`` or ``"deny"``) and how long a write waits for a
    row lock (``lock_timeout``) and how much longer a call may take for connecting and for the
    server's answers (``io_timeout``: every call ends within ``lock_timeout + io_timeout``).
    Durations are seconds or :class:`~datetime.timedelta`.

    ``connections`` declares connections (see :meth:`declare`): ``{identifier: {option:
    value}}``, where the options are those of :meth:`declare` (``scope`` included). With
    ``reconfigure=True``, a declared connection whose stored options differ from the declared
    ones is reconfigured (:meth:`configure`) on its first use in this process; otherwise a
    WARNING names the differences and the stored options stay.

    ``availability_cache`` (seconds, off by default) opts into answering :meth:`available`
    from this process's memory for that long after it last read or wrote the circuit: up to
    that stale about other processes' transitions, never about its own. ``batch_reports``
    (seconds, off by default) opts into keeping back the successes of a healthy circuit for at
    most that long and writing them together (:meth:`flush` writes them at once). Both need a
    Python clock, not ``clock="database"``; see docs/fast-modes.md for what each may lose.
    """

    def __init__(
        self,
        url: str | URL | Engine = engines.DEFAULT_URL,
        *,
        failure_threshold: int = 5,
        expiry: float | timedelta = 60.0,
        half_open_max_calls: int | None = None,
        probe_timeout: float | timedelta | None = None,
        inactive_after: float | timedelta | None = 86_400.0,
        clock: Clock | Literal["database"] | None = None,
        on_db_error: DatabaseErrorPolicy = "raise",
        lock_timeout: float | timedelta = 5.0,
        io_timeout: float | timedelta = engines.IO_TIMEOUT_S,
        connections: Mapping[str, Mapping[str, Any]] | None = None,
        reconfigure: bool = False,
        availability_cache: float | timedelta | None = None,
        batch_reports: float | timedelta | None = None,
        **policies: Unpack[Policies],
    ) -> None:
        self.failure_threshold = validation.threshold(failure_threshold)
        self.expiry = validation.seconds(expiry, "expiry")
        self.half_open_max_calls = _max_calls(half_open_max_calls)
        self.probe_timeout = validation.optional_seconds(probe_timeout, "probe_timeout")
        self.policies = validation.policies(policies)
        """The default policy options (JSON form) of :meth:`register` (see :class:`Policies`)."""
        validation.settings(
            Settings(self.failure_threshold, timedelta(seconds=self.expiry)).updated(self.policies)
        )
        self.inactive_after = validation.optional_seconds(inactive_after, "inactive_after")
        self.lock_timeout = validation.seconds(
            lock_timeout, "lock_timeout", maximum=validation.MAX_LOCK_WAIT
        )
        self.io_timeout = validation.seconds(
            io_timeout, "io_timeout", maximum=validation.MAX_LOCK_WAIT
        )
        if on_db_error not in POLICIES:
            raise InvalidArgumentError(
                f"on_db_error must be one of {', '.join(map(repr, POLICIES))}, not {on_db_error!r}"
            )
        self.on_db_error: DatabaseErrorPolicy = on_db_error
        if not isinstance(reconfigure, bool):
            raise ArgumentTypeError(f"reconfigure must be a bool, not {type(reconfigure).__name__}")
        self.reconfigure = reconfigure
        self.availability_cache = validation.optional_seconds(
            availability_cache, "availability_cache"
        )
        self.batch_reports = validation.optional_seconds(batch_reports, "batch_reports")
        for name in ("availability_cache", "batch_reports"):
            if getattr(self, name) is not None and clock == DATABASE:
                raise InvalidArgumentError(
                    f'{name} needs a Python clock, not clock="database" (it must tell the '
                    "time without asking the database)",
                    argument=name,
                )
        self._declarations = Declarations()
        for identifier, options in _declared_options(connections):
            self.declare(identifier, **options)
        if clock == DATABASE:
            chosen: Clock | None = None
        elif clock is None:
            chosen = system_clock
        elif callable(clock):
            chosen = clock
        else:
            raise ArgumentTypeError(
                f'clock must be a callable or "database", not {type(clock).__name__}'
            )
        self.engine, owns_engine = self._engine_for(url)
        self._owns_engine = owns_engine
        allowance = self.io_timeout
        if owns_engine:
            allowance = engines.connect_allowance(self.engine.url, self.io_timeout)
        self._transactions = Transactions(self.engine, self.lock_timeout, owns_engine, allowance)
        self._listeners = Listeners()
        self._store = Store(
            self._transactions, chosen, self._declarations.get, listeners=self._listeners
        )
        if self.availability_cache is not None:
            self._store.cache = AvailabilityCache(timedelta(seconds=self.availability_cache))
        self._batcher: Batcher | None = None
        if self.batch_reports is not None:
            window = timedelta(seconds=self.batch_reports)
            if self._store.cache is None:
                self._store.cache = AvailabilityCache(window, answers=False)
            self._batcher = Batcher(self._store.record_successes, window)
        self._first_uses = FirstUses()
        self._token = uuid.uuid4().hex[:8]
        self._local = threading.local()
        """This thread's :meth:`actor` (made once per thread and process)."""

    def _engine_for(self, url: object) -> tuple[Engine, bool]:
        """The engine to use for the ``url`` argument, and whether brama_sql built it."""
        if isinstance(url, Engine):
            return url, False
        elif isinstance(url, (str, URL)):
            url = _database_url(url)
            try:
                built = engines.build(url, self.lock_timeout, io_timeout=self.io_timeout)
                return built, True
            except ArgumentError as error:
                raise InvalidArgumentError(
                    f"url {_shown(url)} cannot be used: {error}", argument="url"
                ) from error
            except ImportError as error:
                raise InvalidArgumentError(
                    f"url {_shown(url)} needs a driver that is not installed ({error}): install "
                    "brama_sql[postgres] for PostgreSQL, brama_sql[mysql] for MySQL/MariaDB",
                    argument="url",
                ) from error
        else:
            raise ArgumentTypeError(
                f"url must be a database URL or an SQLAlchemy Engine, not {type(url).__name__}"
            )

    def __repr__(self) -> str:
        return f"Brama({self.engine.url.render_as_string(hide_password=True)!r})"

    def actor(self) -> str:
        """Who the current caller is: ``host:pid:instance:thread``.

        Written into every event the caller causes (so the transition event of a trip names
        the caller whose report tripped it), and the holder of the probe permits it claims.
        """
        local = self._local
        pid = os.getpid()
        if getattr(local, "pid", None) != pid:  # first call in this thread of this process
            actor = f"{_hostname()}:{pid}:{self._token}:{threading.get_native_id()}"
            local.actor, local.pid = actor[-255:], pid
        actor_of_thread: str = local.actor
        return actor_of_thread

    # -- schema -----------------------------------------------------------------------------

    def migrate(self, connection: Connection | None = None) -> None:
        """Upgrade brama_sql's tables to the newest revision. Idempotent; safe to run at once
        from several processes. Pass ``connection`` to run on the host application's connection
        (its transaction, if it began one, is left for it to commit)."""
        if connection is not None and not isinstance(connection, Connection):
            raise ArgumentTypeError(
                f"connection must be an SQLAlchemy Connection, not {type(connection).__name__}"
            )
        target: Engine | Connection = self._migrator() if connection is None else connection
        try:
            with self._transactions.gate:
                migration.upgrade(target)
        except AlembicError as error:
            raise SchemaError(f"brama_sql's migration failed: {error}") from error
        except SQLAlchemyError as error:
            raise BramaDatabaseError("migrate", getattr(error, "orig", None) or error) from error
        finally:
            if target is not self.engine and isinstance(target, Engine):
                target.dispose()

    def _migrator(self) -> Engine:
        """The engine to migrate with: on an engine brama_sql built, a short-lived one without
        the call-time lock and read limits (a migration may wait for another process's one);
        the host's own engine, and an in-memory database's only engine, as they are."""
        if not self._owns_engine or isinstance(self.engine.pool, StaticPool):
            return self.engine
        return engines.build(
            self.engine.url, self.lock_timeout, io_timeout=self.io_timeout, migrating=True
        )

    # -- connections ------------------------------------------------------------------------

    def register(
        self,
        identifier: str,
        *,
        scope: str | None = None,
        metadata: dict[str, Any] | None = None,
        failure_threshold: int | None = None,
        expiry: float | timedelta | None = None,
        half_open_max_calls: int | _Unset | None = UNSET,
        probe_timeout: float | timedelta | _Unset | None = UNSET,
        exist_ok: bool = False,
        **policies: Unpack[Policies],
    ) -> ConnectionStatus:
        """Start monitoring a connection; it begins in ``unknown``.

        Options left out take the constructor's values (``half_open_max_calls=None`` and
        ``probe_timeout=None`` given explicitly mean no limit and "the expiry").
        Raises :class:`AlreadyRegisteredError` if it exists, unless ``exist_ok`` is true: then
        the existing connection is returned untouched (registering never resets shared state).
        """
        identity, registration = self._registration(
            identifier,
            scope,
            metadata,
            failure_threshold,
            expiry,
            half_open_max_calls,
            probe_timeout,
            policies,
        )
        if not isinstance(exist_ok, bool):
            raise ArgumentTypeError(f"exist_ok must be a bool, not {type(exist_ok).__name__}")
        call = f"register({identity.identifier!r}, scope={identity.scope!r}, exist_ok=True)"
        return self._register(identity, registration, exist_ok, call)

    def _register(
        self, identity: Identity, registration: Registration, exist_ok: bool, call: str
    ) -> ConnectionStatus:
        """Register; with ``exist_ok``, warn (naming ``call``) when the stored options of an
        existing connection differ from ``registration``, and leave them."""
        status, differences = self._store.register(
            identity, registration, self.actor(), exist_ok=exist_ok
        )
        if differences:
            logger.warning(
                "%s: the stored options differ and stay (call configure() to change them): %s",
                call,
                describe(differences),
            )
        return status

    def declare(
        self,
        identifier: str,
        *,
        scope: str | None = None,
        metadata: dict[str, Any] | None = None,
        failure_threshold: int | None = None,
        expiry: float | timedelta | None = None,
        half_open_max_calls: int | _Unset | None = UNSET,
        probe_timeout: float | timedelta | _Unset | None = UNSET,
        **policies: Unpack[Policies],
    ) -> None:
        """Declare a connection and its options, without touching the database.

        A declared connection that has no row (never registered, or removed by
        :meth:`cleanup` or :meth:`unregister`) is registered with these options by the first
        call that needs it (:meth:`available`, a report, :meth:`status`, :meth:`open`,
        :meth:`close`, :meth:`reset`, :meth:`configure`), in that call's transaction, exactly
        once across every process; its ``registered`` event has the reason ``"declared"``.
        Options left out take the constructor's values, as in :meth:`register`. Declaring the
        same connection again replaces its declaration.
        """
        identity, registration = self._registration(
            identifier,
            scope,
            metadata,
            failure_threshold,
            expiry,
            half_open_max_calls,
            probe_timeout,
            policies,
        )
        self._declarations.declare(identity, registration)

    def configure(
        self,
        identifier: str,
        *,
        scope: str | None = None,
        metadata: dict[str, Any] | _Unset = UNSET,
        failure_threshold: int | None = None,
        expiry: float | timedelta | None = None,
        half_open_max_calls: int | _Unset | None = UNSET,
        probe_timeout: float | timedelta | _Unset | None = UNSET,
        **policies: Unpack[Policies],
    ) -> ConnectionStatus:
        """Change a connection's stored options; those left out keep their stored values.

        One row-locked transaction: a due expiry is applied first (under the old options),
        the changed options are written and a ``configured`` event logs their old and new
        values. A ``failure_threshold`` lowered to or below the consecutive failures of a
        closed circuit opens it at once (a ``transition`` with cause ``configured``). Nothing
        is written when no option differs. Returns the status after the change.
        """
        identity = _identity(identifier, scope)
        wanted: dict[str, Any] = {}
        if metadata is not UNSET:
            wanted["metadata"] = validation.metadata(metadata)
        if failure_threshold is not None:
            wanted["failure_threshold"] = validation.threshold(failure_threshold)
        if expiry is not None:
            wanted["expiry"] = validation.seconds(expiry, "expiry")
        if half_open_max_calls is not UNSET:
            wanted["half_open_max_calls"] = _max_calls(half_open_max_calls)
        if probe_timeout is not UNSET:
            wanted["probe_timeout"] = validation.optional_seconds(probe_timeout, "probe_timeout")
        wanted.update(validation.policies(policies))
        self._flush_first(identity)
        status = self._store.configure(identity, wanted, self.actor())
        declared = self._declarations.get(identity)
        if declared is not None:
            # Chosen here on purpose: the declaration must not undo it on the next call.
            self._declarations.compared(identity, declared)
        return status

    def _registration(
        self,
        identifier: object,
        scope: object,
        metadata: object,
        failure_threshold: object,
        expiry: object,
        half_open_max_calls: object,
        probe_timeout: object,
        policies: Mapping[str, object],
    ) -> tuple[Identity, Registration]:
        """Validate a connection's options, filling in the constructor's for those left out."""
        identity = _identity(identifier, scope)
        threshold = validation.threshold(
            self.failure_threshold if failure_threshold is None else failure_threshold
        )
        seconds = validation.seconds(self.expiry if expiry is None else expiry, "expiry")
        max_calls = _max_calls(
            self.half_open_max_calls if half_open_max_calls is UNSET else half_open_max_calls
        )
        probe = validation.optional_seconds(
            self.probe_timeout if probe_timeout is UNSET else probe_timeout, "probe_timeout"
        )
        settings = Settings(
            failure_threshold=threshold,
            expiry=timedelta(seconds=seconds),
            half_open_max_calls=max_calls,
            probe_timeout=None if probe is None else timedelta(seconds=probe),
        ).updated({**self.policies, **validation.policies(policies)})
        validation.settings(settings)
        return identity, Registration(validation.metadata(metadata), settings)

    def _reconcile(self, identity: Identity) -> None:
        """On a declared connection's first use in this process, compare its declared options
        with the stored ones: reconfigure, or warn about the differences."""
        declared = self._declarations.pending(identity)
        if declared is None:
            return
        wanted = declared.as_options()
        if self.reconfigure:
            self._store.configure(identity, wanted, self.actor())
        else:
            stored = self._store.stored_options(identity)
            differences = {} if stored is None else changes(stored, wanted)
            if differences:
                logger.warning(
                    "declared connection %r (scope %r): the stored options differ and stay "
                    "(pass reconfigure=True or call configure() to apply them): %s",
                    identity.identifier,
                    identity.scope,
                    describe(differences),
                )
        self._declarations.compared(identity, declared)

    def unregister(self, identifier: str, *, scope: str | None = None) -> bool:
        """Stop monitoring a connection (its history stays); ``True`` if it existed."""
        identity = _identity(identifier, scope)
        self._flush_first(identity)
        return self._store.unregister(identity, self.actor())

    def available(self, identifier: str, *, scope: str | None = None) -> bool:
        """Whether a call may go through now: ``True`` unless the circuit is open. ``False`` for
        a connection that is not registered.

        Reads only, except in a half-open circuit with ``half_open_max_calls`` set: there each
        ``True`` is a probe permit claimed in the database for this caller (:meth:`actor`),
        settled by the caller's next report or expired after ``probe_timeout``. When the
        database fails, ``on_db_error`` decides: raise, ``True`` ("allow") or ``False`` ("deny").
        """
        identity = _identity(identifier, scope)
        try:
            self._reconcile(identity)
            return self._store.available(identity, self.actor())
        except BramaDatabaseError as error:
            if self.on_db_error == "raise":
                raise
            logger.warning("available() answers %s: %s", self.on_db_error, error)
            return self.on_db_error == "allow"

    def status(self, identifier: str, *, scope: str | None = None) -> ConnectionStatus:
        """The connection's circuit and its metrics, as of now."""
        identity = _identity(identifier, scope)
        self._reconcile(identity)
        self._flush_first(identity)
        return self._store.status(identity, self.actor())

    def connections(self, *, scope: str | _Every | None = EVERY_SCOPE) -> list[ConnectionStatus]:
        """The status of every registered connection, ordered by scope then identifier.

        Leave ``scope`` out for every scope; ``scope=None`` lists only unscoped connections.
        """
        if scope is EVERY_SCOPE:
            return self._store.statuses(None)
        return self._store.statuses(stored_scope(validation.scope(scope)))

    def events(
        self,
        identifier: str | None = None,
        *,
        scope: str | _Every | None = EVERY_SCOPE,
        since: datetime | None = None,
        limit: int | None = None,
    ) -> list[Event]:
        """Logged events, oldest first, also of connections that no longer exist.

        ``identifier=None`` means every connection; leaving ``scope`` out means every scope
        (``scope=None``: only unscoped); ``since`` keeps events that occurred at or after it;
        ``limit`` keeps the first ``limit`` of them.
        """
        condition = self._event_condition(identifier, scope, since)
        return self._store.events(condition, validation.limit(limit))

    def stream_events(
        self,
        identifier: str | None = None,
        *,
        scope: str | _Every | None = EVERY_SCOPE,
        since: datetime | None = None,
        until: datetime | None = None,
        kinds: Iterable[Kind | str] | None = None,
        newest: int | None = None,
        limit: int | None = None,
        page_size: int = PAGE_SIZE,
    ) -> Iterator[Event]:
        """Logged events, oldest first, as an iterator that reads the log in pages of
        ``page_size`` events (one short transaction each), so memory stays flat on any log.

        Filters as :meth:`events`, plus ``until`` (events that occurred before it) and
        ``kinds`` (only these kinds); ``newest`` keeps the newest that many (still oldest
        first), ``limit`` the first that many. Arguments are checked at the call; events
        committed while the iterator runs may be included.
        """
        condition = self._event_condition(identifier, scope, since)
        end = validation.moment(until, "until")
        if end is not None:
            condition &= events.c.occurred_at < end
        if kinds is not None:
            condition &= events.c.kind.in_([_kind(kind) for kind in _listed(kinds, "kinds")])
        return self._store.stream_events(
            condition,
            newest=validation.limit(newest),
            limit=validation.limit(limit),
            page_size=validation.threshold(page_size, "page_size"),
            every_scope_of=identifier is not None and scope is EVERY_SCOPE,
        )

    def _event_condition(
        self, identifier: str | None, scope: str | _Every | None, since: datetime | None
    ) -> ColumnElement[bool]:
        condition: ColumnElement[bool] = true()
        if identifier is not None:
            condition &= events.c.identifier == validation.identifier(identifier)
        if scope is not EVERY_SCOPE:
            condition &= events.c.scope == stored_scope(validation.scope(scope))
        moment = validation.moment(since, "since")
        if moment is not None:
            condition &= events.c.occurred_at >= moment
        return condition

    def report(
        self, since: datetime | timedelta | float, *, scope: str | _Every | None = EVERY_SCOPE
    ) -> Report:
        """What happened to each registered connection from ``since`` (an aware datetime, or
        a duration before now: seconds or a ``timedelta``) until now: reports, failures,
        success rate, trips, total and longest time open, and the last transition.

        Reads only the window's events (and one point read per connection), never the whole
        log. Leave ``scope`` out for every scope; ``scope=None`` reports only unscoped
        connections. A connection whose window reaches into pruned events is marked
        ``complete=False``. See docs/operating.md.
        """
        if isinstance(since, datetime):
            start: datetime | None = validation.moment(since, "since")
            ago = timedelta(0)
        else:
            start = None
            ago = timedelta(seconds=validation.seconds(since, "since"))
        condition: ColumnElement[bool] = true()
        logged: ColumnElement[bool] = true()
        if scope is not EVERY_SCOPE:
            stored = stored_scope(validation.scope(scope))
            condition = connections.c.scope == stored
            logged = events.c.scope == stored

        def body(conn: Connection) -> Report:
            if conn.dialect.name == "mysql":
                conn.execution_options(isolation_level="REPEATABLE READ")
            now = self._store.now(conn)
            begins = now - ago if start is None else start
            window = reporting.read_window(conn, condition, logged, begins)
            return reporting.report(window, begins, max(now, begins))

        return self._store.run("report", body, write=False)

    # -- reports ----------------------------------------------------------------------------

    def success(
        self,
        identifier: str,
        *,
        scope: str | None = None,
        reason: str | None = None,
        duration: float | timedelta | None = None,
    ) -> Transition | None:
        """Report a successful call to the dependency; ``duration`` (seconds or a
        ``timedelta``) is how long it took, logged with it and judged by the slow-call policy.

        Returns the :class:`Transition` this report caused (``half_open -> closed`` when it
        was the probe that closed the circuit), else ``None``.
        """
        return self._report(
            Kind.SUCCESS,
            _identity(identifier, scope),
            validation.reason(reason),
            duration=validation.duration(duration),
        )

    def failure(
        self,
        identifier: str,
        *,
        scope: str | None = None,
        reason: str | None = None,
        duration: float | timedelta | None = None,
    ) -> Transition | None:
        """Report a failed call to the dependency (``reason`` and ``duration``, as in
        :meth:`success`, are logged with it).

        Returns the :class:`Transition` this report caused (``closed -> open`` when it was
        the report that tripped the circuit), else ``None``.
        """
        return self._report(
            Kind.FAILURE,
            _identity(identifier, scope),
            validation.reason(reason),
            duration=validation.duration(duration),
        )

    def _report(
        self,
        kind: Kind,
        identity: Identity,
        note: str | None,
        permit: Permit | None = None,
        duration: float | None = None,
    ) -> Transition | None:
        """Report a checked ``note``; through ``permit`` when given (its events name
        :meth:`Permit.actor`, and it settles the probe permit its holder holds)."""
        actor = self.actor() if permit is None else permit.actor()
        try:
            self._reconcile(identity)
            if self._kept_back(kind, identity, note, actor, permit, duration):
                return None
            self._flush_first(identity)
            outcome = self._store.change(
                kind.value,
                identity,
                lambda circuit, settings, now, holds: machine.record(
                    circuit, settings, kind, now, note, holds, duration
                ),
                actor,
                report=True,
                holder=None if permit is None else permit.holder,
                shared=kind is Kind.SUCCESS,
            )
        except BramaDatabaseError as error:
            if self.on_db_error == "raise":
                raise
            what = "outcome unknown" if isinstance(error, ReportOutcomeUnknownError) else "dropped"
            logger.warning("%s report for %s %s: %s", kind.value, identity.identifier, what, error)
            return None
        for occurrence in outcome.occurrences:
            if occurrence.cause is Cause.REPORT:
                assert occurrence.from_state is not None and occurrence.to_state is not None
                return Transition(
                    occurrence.from_state,
                    occurrence.to_state,
                    occurrence.occurred_at,
                    occurrence.reason,
                )
        return None

    # -- protected calls --------------------------------------------------------------------

    def acquire(self, identifier: str, *, scope: str | None = None) -> Permit | None:
        """Ask for admission to one call, as a caller of its own: a :class:`Permit` when the
        circuit lets the call through (as :meth:`available` would answer ``True``), else
        ``None``. Report the call's outcome through the permit (``permit.success()``,
        ``permit.failure(reason=...)``, or ``permit.release()`` for neither).

        Unlike :meth:`available`, whose caller is the OS thread, each permit is a caller of
        its own: in a half-open circuit with ``half_open_max_calls`` set, the probe permit it
        claims belongs to it (``Permit.holder``), and only its own report settles it, from
        whichever thread or task. ``None`` for a connection that is not registered. When the
        database fails, ``on_db_error`` decides: raise, a permit ("allow") or ``None``
        ("deny").
        """
        return self._acquire(_identity(identifier, scope))[0]

    def _acquire(self, identity: Identity) -> tuple[Permit | None, BramaDatabaseError | None]:
        """:meth:`acquire`, and the database error that ``on_db_error`` answered, if any."""
        token = new_token()
        holder = tagged(self.actor(), token)
        try:
            self._reconcile(identity)
            admission = self._store.admit(identity, holder, holder)
        except BramaDatabaseError as error:
            if self.on_db_error == "raise":
                raise
            logger.warning("available() answers %s: %s", self.on_db_error, error)
            if self.on_db_error == "deny":
                return None, error
            return Permit(self, identity, token, holder, probe=False), error
        if admission is Admission.REFUSED:
            return None, None
        return Permit(self, identity, token, holder, probe=admission is Admission.PERMIT), None

    def _release(self, permit: Permit) -> None:
        """Delete ``permit``'s probe permit without a report (``on_db_error`` applies)."""
        try:
            self._store.release(permit.identity, permit.holder)
        except BramaDatabaseError as error:
            if self.on_db_error == "raise":
                raise
            logger.warning(
                "permit release for %s dropped (it expires after probe_timeout): %s",
                permit.identifier,
                error,
            )

    def _refusal(self, identity: Identity) -> Refusal:
        return self._store.refusal(identity)

    def _ensure_registered(
        self, identity: Identity, registration: Registration, again: bool = False
    ) -> None:
        """Register a guarded connection unless it exists (``exist_ok``: never resetting or
        changing it), once per process and options, or ``again`` after it went missing; warn
        once when the stored options differ."""
        if not again and self._first_uses.seen(identity, registration):
            return
        call = f"guard({identity.identifier!r}, scope={identity.scope!r}, register=True)"
        self._register(identity, registration, True, call)
        self._first_uses.note(identity, registration)

    def guard(
        self,
        identifier: str,
        *,
        scope: str | None = None,
        exclude: Exclude | None = None,
        register: bool = False,
        metadata: dict[str, Any] | None = None,
        failure_threshold: int | None = None,
        expiry: float | timedelta | None = None,
        half_open_max_calls: int | _Unset | None = UNSET,
        probe_timeout: float | timedelta | _Unset | None = UNSET,
        **policies: Unpack[Policies],
    ) -> Guard:
        """A context manager protecting the call in its block::

            with brama.guard("payments-api", scope="payments") as permit:
                charge_card()

        On entry it asks for admission (:meth:`acquire`); when refused it raises
        :class:`CircuitOpenError` (with the status read and ``retry_after``) and the block does
        not run. A block that exits normally is reported as a success; one that raises an
        ``Exception`` as a failure with reason ``"<ExceptionType>: <message>"``, and the
        exception propagates unchanged. Exceptions matching ``exclude`` (a type, a tuple of
        types, or a predicate ``exception -> bool``), and ``BaseException`` subclasses that
        are not ``Exception`` subclasses, count as neither and hand a probe permit back.

        An unregistered connection raises :class:`NotRegisteredError`, unless ``register`` is
        true: then it is registered on first use with ``metadata``, ``failure_threshold``,
        ``expiry``, ``half_open_max_calls`` and ``probe_timeout`` (the constructor's defaults
        for those left out); an existing connection is never reset or changed (a WARNING,
        once per process, names options that differ). Those options need ``register=True``.
        """
        return Guard(
            self,
            _identity(identifier, scope),
            Exclusion(exclude),
            self._guard_registration(
                identifier,
                scope,
                register,
                metadata,
                failure_threshold,
                expiry,
                half_open_max_calls,
                probe_timeout,
                policies,
            ),
        )

    def protect(
        self,
        identifier: str,
        *,
        scope: str | None = None,
        exclude: Exclude | None = None,
        register: bool = False,
        failure_if: Callable[[Any], object] | None = None,
        fallback: Callable[..., Any] | None = None,
        metadata: dict[str, Any] | None = None,
        failure_threshold: int | None = None,
        expiry: float | timedelta | None = None,
        half_open_max_calls: int | _Unset | None = UNSET,
        probe_timeout: float | timedelta | _Unset | None = UNSET,
        **policies: Unpack[Policies],
    ) -> Callable[[Callable[P, R]], Callable[P, R]]:
        """A decorator that runs every call of a function in :meth:`guard` (same options)::

            @brama.protect("payments-api", scope="payments", fallback=lambda order: None)
            def charge(order): ...

        ``failure_if(result)`` true reports a returned value as a failure (the value is still
        returned). ``fallback``, when given, is called with the call's own arguments,
        ``fallback(*args, **kwargs)``, and its result returned instead of raising
        :class:`CircuitOpenError` when the circuit refuses. Works on functions, methods,
        static and class methods; ``functools.wraps`` keeps the function's metadata. A
        coroutine or generator function raises :class:`ArgumentTypeError` (a ``TypeError``)
        here, at decoration.
        """
        guarded = self.guard(
            identifier,
            scope=scope,
            exclude=exclude,
            register=register,
            metadata=metadata,
            failure_threshold=failure_threshold,
            expiry=expiry,
            half_open_max_calls=half_open_max_calls,
            probe_timeout=probe_timeout,
            **policies,
        )
        return protect(
            guarded,
            checked_callable(failure_if, "failure_if"),
            checked_callable(fallback, "fallback"),
        )

    def _guard_registration(
        self,
        identifier: object,
        scope: object,
        register: object,
        metadata: object,
        failure_threshold: object,
        expiry: object,
        half_open_max_calls: object,
        probe_timeout: object,
        policies: Mapping[str, object],
    ) -> Registration | None:
        """The options a ``register=True`` guard registers with; ``None`` without it."""
        if not isinstance(register, bool):
            raise ArgumentTypeError(f"register must be a bool, not {type(register).__name__}")
        if register:
            return self._registration(
                identifier,
                scope,
                metadata,
                failure_threshold,
                expiry,
                half_open_max_calls,
                probe_timeout,
                policies,
            )[1]
        given = {
            "metadata": metadata is not None,
            "failure_threshold": failure_threshold is not None,
            "expiry": expiry is not None,
            "half_open_max_calls": half_open_max_calls is not UNSET,
            "probe_timeout": probe_timeout is not UNSET,
            **{name: True for name in validation.policies(policies)},
        }
        named = [name for name, present in given.items() if present]
        if named:
            raise InvalidArgumentError(
                f"{', '.join(named)} only apply with register=True (they are the options the "
                "connection is registered with on first use)"
            )
        return None

    # -- listeners --------------------------------------------------------------------------

    def on_state_change(self, callback: Callback) -> Listener:
        """Call ``callback(event)`` with every ``transition`` :class:`Event` this ``Brama``
        writes, after its transaction committed: reports, expiries persisted by its calls,
        ``open()``/``close()``/``reset()``, ``configure()``, ``cleanup()``. Only the
        process and ``Brama`` object that wrote a transition announces it, so a fleet sees
        each transition exactly once in total. A callback that raises is logged, never
        breaking the call. Usable as a decorator; returns a :class:`Listener` (callable like
        the callback) whose ``remove()`` unregisters it.
        """
        return self._listeners.add(callback)

    def _kept_back(
        self,
        kind: Kind,
        identity: Identity,
        note: str | None,
        actor: str,
        permit: Permit | None,
        duration: float | None = None,
    ) -> bool:
        """Batched reporting: keep a success of a circuit seen healthy lately for its batch."""
        batcher, cache, clock = self._batcher, self._store.cache, self._store.clock
        if batcher is None or cache is None or clock is None or kind is not Kind.SUCCESS:
            return False
        if permit is not None and permit.probe:
            return False
        now = read_clock(clock)
        if not cache.healthy(identity, now, batcher.window):
            return False
        batcher.add(identity, Buffered(now, actor, note, duration))
        return True

    def _flush_first(self, identity: Identity) -> None:
        """Write this process's batch of ``identity`` before another write to it, so that the
        log keeps the order in which this process reported."""
        if self._batcher is not None:
            self._batcher.flush(identity)

    def flush(self) -> None:
        """Write every success batched reporting keeps back (also done at exit and within
        ``batch_reports`` seconds). Raises :class:`BramaDatabaseError` when a batch cannot be
        written (its successes are lost, as a WARNING says), unless ``on_db_error`` is
        ``"allow"`` or ``"deny"``. Does nothing without ``batch_reports``."""
        if self._batcher is None:
            return
        try:
            self._batcher.flush()
        except BramaDatabaseError:
            if self.on_db_error == "raise":
                raise

    # -- manual controls ------------------------------------------------------------------

    def open(self, identifier: str, *, scope: str | None = None, reason: str | None = None) -> None:
        """Force the circuit open now (``opened_at`` is now; the expiry runs from here)."""
        self._force(Cause.MANUAL_OPEN, identifier, scope, reason)

    def close(
        self, identifier: str, *, scope: str | None = None, reason: str | None = None
    ) -> None:
        """Force the circuit closed and zero its consecutive failure count."""
        self._force(Cause.MANUAL_CLOSE, identifier, scope, reason)

    def reset(
        self, identifier: str, *, scope: str | None = None, reason: str | None = None
    ) -> None:
        """Return the circuit to a clean closed state (today the same as :meth:`close`)."""
        self._force(Cause.MANUAL_RESET, identifier, scope, reason)

    def disable(
        self, identifier: str, *, scope: str | None = None, reason: str | None = None
    ) -> None:
        """Disable the circuit: always available, reports still logged and counted, and it
        never trips, until :meth:`close`, :meth:`reset`, :meth:`open` or :meth:`force_open`."""
        self._force(Cause.DISABLE, identifier, scope, reason)

    def force_open(
        self, identifier: str, *, scope: str | None = None, reason: str | None = None
    ) -> None:
        """Hold the circuit open: it refuses every call and never expires into half-open,
        until :meth:`close` or :meth:`reset` releases it (a refusal's ``retry_after`` is
        ``None``)."""
        self._force(Cause.FORCE_OPEN, identifier, scope, reason)

    def _now(self) -> datetime:
        """The time by this ``Brama``'s Python clock (the system's with ``clock="database"``):
        what guards measure calls with."""
        clock = self._store.clock
        return read_clock(system_clock if clock is None else clock)

    def _force(self, action: Cause, identifier: str, scope: str | None, reason: str | None) -> None:
        identity = _identity(identifier, scope)
        note = validation.reason(reason)
        self._reconcile(identity)
        self._flush_first(identity)
        self._store.change(
            action.value.removeprefix("manual_"),
            identity,
            lambda circuit, settings, now, _holds: machine.force(
                circuit, action, now, note, settings
            ),
            self.actor(),
            report=False,
        )

    # -- maintenance ------------------------------------------------------------------------

    def cleanup(self) -> int:
        """Remove connections idle for ``inactive_after`` seconds; return how many went.

        Registration, reports and transitions count as activity. Does nothing when
        ``inactive_after`` is ``None``.
        """
        if self.inactive_after is None:
            return 0
        return self._store.cleanup(timedelta(seconds=self.inactive_after), self.actor())

    def prune(self, older_than: float | timedelta, *, batch_size: int = BATCH_SIZE) -> int:
        """Delete the events older than ``older_than`` seconds (or a ``timedelta``); return
        how many went.

        Totals stay exact: ``status()`` and ``connections()`` read tallies the row keeps, and
        each deleted event is added to the ``brama_rollups`` row of its connection and hour.
        Deletes in short batches (a connection's row is locked for one batch at a time), so it
        runs safely beside live traffic and resumes where an interrupted run stopped. A
        connection's log keeps its events from the cutoff on; that of an unregistered or removed
        connection goes whole once its newest event is older. ``replay.verify`` goes on from
        the checkpoint each batch stores on the row. ``batch_size`` events at most are
        deleted per transaction. See docs/retention.md.
        """
        age = validation.seconds(older_than, "older_than")
        size = validation.threshold(batch_size, "batch_size")
        return Pruner(self._store, size).prune(timedelta(seconds=age))

    def start_cleaner(self, interval: float | timedelta = 60.0) -> Cleaner:
        """Run :meth:`cleanup` every ``interval`` seconds in a daemon thread; returns the
        running :class:`~brama_sql.cleaner.Cleaner` (call its ``stop()`` to end it)."""
        return Cleaner(self, interval).start()

    def dispose(self) -> None:
        """Close the engine's pooled database connections (in a forked child that has not used
        this Brama yet, only its own: the parent's are left to the parent)."""
        if self._batcher is not None:
            with contextlib.suppress(BramaDatabaseError):
                self._batcher.flush()  # logged, with how many were lost
        self._transactions.dispose()


@functools.lru_cache(maxsize=1)
def _hostname() -> str:
    return socket.gethostname()


def _listed(value: object, name: str) -> list[object]:
    """The items of an iterable argument (a lone string is refused: it would be its letters)."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise ArgumentTypeError(f"{name} must be an iterable of kinds, not {type(value).__name__}")
    return list(value)


def _kind(value: object) -> str:
    """An event kind's stored value (a :class:`Kind` or its string)."""
    if not isinstance(value, str):
        kind = type(value).__name__
        raise ArgumentTypeError(f"an event kind must be a Kind or a str, not {kind}")
    try:
        return Kind(value).value
    except ValueError:
        known = ", ".join(kind.value for kind in Kind)
        raise InvalidArgumentError(f"unknown event kind {value!r}; one of {known}") from None


def _max_calls(value: object) -> int | None:
    return None if value is None else validation.threshold(value, "half_open_max_calls")


def _declared_options(
    declared: object,
) -> list[tuple[str, dict[str, Any]]]:
    """The ``connections`` argument of :class:`Brama` checked: identifiers and option names."""
    if declared is None:
        return []
    if not isinstance(declared, Mapping):
        raise ArgumentTypeError(
            f"connections must be a mapping of identifiers to options, not "
            f"{type(declared).__name__}"
        )
    checked = []
    for identifier, options in declared.items():
        name = validation.identifier(identifier)
        if not isinstance(options, Mapping):
            raise ArgumentTypeError(
                f"connections[{name!r}] must be a mapping of options, not {type(options).__name__}"
            )
        unknown = sorted(str(key) for key in options if key not in OPTION_NAMES)
        if unknown:
            raise InvalidArgumentError(
                f"connections[{name!r}] has unknown options {', '.join(unknown)} (known: "
                f"{', '.join(sorted(OPTION_NAMES))})"
            )
        checked.append((name, dict(options)))
    return checked


def _identity(identifier: object, scope: object) -> Identity:
    if type(identifier) is str and (scope is None or type(scope) is str):
        return _checked_identity(identifier, scope)
    return Identity(validation.identifier(identifier), validation.scope(scope))


@functools.lru_cache(maxsize=4096)
def _checked_identity(identifier: str, scope: str | None) -> Identity:
    """The identity of a valid ``identifier`` and ``scope`` (plain strings), kept for the next
    call naming them (an application calls the same few connections again and again; checking
    the text costs more than the lookup). A refused one raises and is not kept."""
    return Identity(validation.identifier(identifier), validation.scope(scope))


def _database_url(url: str | URL) -> URL:
    """``url`` parsed, with a port from 1 to 65535 if it names one. A URL that cannot be
    parsed is an :class:`InvalidArgumentError` that does not repeat it (it may hold a
    password)."""
    try:
        parsed = make_url(url)
        port = parsed.port
    except (ArgumentError, ValueError, TypeError) as error:
        problem = " (its port is not a number)" if isinstance(error, ValueError) else ""
        raise InvalidArgumentError(
            f"url cannot be parsed as a database URL{problem}: "
            "dialect+driver://user:password@host:port/database, or sqlite:///path",
            argument="url",
        ) from None
    if port is not None and not 0 < port < 65536:
        raise InvalidArgumentError(
            f"url {_shown(parsed)} names port {port}, not one from 1 to 65535", argument="url"
        )
    return parsed


def _shown(url: URL) -> str:
    """``url`` for a message: its password, and any query parameter named like one, hidden."""
    secret = {name: "hidden" for name in url.query if "password" in name.lower()}
    return url.update_query_dict(secret).render_as_string(hide_password=True)
