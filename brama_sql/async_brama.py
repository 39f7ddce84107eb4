"""The asyncio entry point: :class:`AsyncBrama`, :class:`~brama_sql.Brama` with coroutines."""

from __future__ import annotations

import functools
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, TypeVar

from sqlalchemy.engine import URL, Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from brama_sql import bridge
from brama_sql.async_cleaner import AsyncCleaner
from brama_sql.async_guard import AsyncGuard, AsyncPermit, protect_coroutines
from brama_sql.brama import EVERY_SCOPE, UNSET, DatabaseErrorPolicy, _Every, _Unset
from brama_sql.bridge import BridgedBrama
from brama_sql.circuit import Kind
from brama_sql.clock import Clock
from brama_sql.engine import IO_TIMEOUT_S
from brama_sql.errors import ArgumentTypeError
from brama_sql.guard import Exclude, checked_callable
from brama_sql.listeners import Callback, Listener
from brama_sql.policies import Policies
from brama_sql.pruning import BATCH_SIZE
from brama_sql.records import ConnectionStatus, Event, Report, Transition
from brama_sql.store import PAGE_SIZE

if TYPE_CHECKING:
    from typing_extensions import Unpack

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_URL = "sqlite+aiosqlite:///brama.db"


class AsyncBrama:
    """:class:`~brama_sql.Brama` for asyncio code: every method that reads or writes the
    database is a coroutine, with the same arguments, the same errors and the same records.

    ``url`` is a database URL or an SQLAlchemy :class:`~sqlalchemy.ext.asyncio.AsyncEngine`.
    A URL naming only its database takes its asyncio driver (``sqlite://`` ->
    ``sqlite+aiosqlite``, ``postgresql://`` -> ``postgresql+psycopg``, ``mysql://`` ->
    ``mysql+aiomysql``), the drivers brama_sql is tested with. An in-memory SQLite database
    is refused (use a file). The keyword options are :class:`~brama_sql.Brama`'s, except
    ``batch_reports`` (refused: its writer is a thread).

    The calls run brama_sql's own row-locked transactions through SQLAlchemy's greenlet bridge
    (see docs/asyncio.md): each asyncio task is a caller of its own, a call whose task is
    cancelled still finishes its transaction (the task stops waiting at once), and the
    watchdog bounds every call by ``lock_timeout + io_timeout`` as in :class:`Brama`.
    """

    def __init__(
        self,
        url: str | URL | AsyncEngine = DEFAULT_URL,
        *,
        failure_threshold: int = 5,
        expiry: float | timedelta = 60.0,
        half_open_max_calls: int | None = None,
        probe_timeout: float | timedelta | None = None,
        inactive_after: float | timedelta | None = 86_400.0,
        clock: Clock | Literal["database"] | None = None,
        on_db_error: DatabaseErrorPolicy = "raise",
        lock_timeout: float | timedelta = 5.0,
        io_timeout: float | timedelta = IO_TIMEOUT_S,
        connections: Mapping[str, Mapping[str, Any]] | None = None,
        reconfigure: bool = False,
        availability_cache: float | timedelta | None = None,
        batch_reports: float | timedelta | None = None,
        **policies: Unpack[Policies],
    ) -> None:
        self.sync = BridgedBrama(
            url,
            failure_threshold=failure_threshold,
            expiry=expiry,
            half_open_max_calls=half_open_max_calls,
            probe_timeout=probe_timeout,
            inactive_after=inactive_after,
            clock=clock,
            on_db_error=on_db_error,
            lock_timeout=lock_timeout,
            io_timeout=io_timeout,
            connections=connections,
            reconfigure=reconfigure,
            availability_cache=availability_cache,
            batch_reports=batch_reports,
            **policies,
        )
        """The synchronous :class:`~brama_sql.Brama` behind this one, on
        ``engine.sync_engine``; its database calls work only inside SQLAlchemy's greenlet
        bridge (call the coroutines of this object instead)."""

    def __repr__(self) -> str:
        url = self.engine.url.render_as_string(hide_password=True)
        return f"AsyncBrama({url!r})"

    @property
    def engine(self) -> AsyncEngine:
        """The asyncio engine (built from the URL, or the one passed in)."""
        return self.sync.async_engine

    @property
    def on_db_error(self) -> DatabaseErrorPolicy:
        """What :meth:`available` and the reports do when the database fails."""
        return self.sync.on_db_error

    def actor(self) -> str:
        """Who the current caller is: ``host:pid:instance:thread:task-N`` inside an asyncio
        task (each task a caller of its own), else as :meth:`Brama.actor`."""
        return self.sync.actor()

    # -- schema -----------------------------------------------------------------------------

    async def migrate(self, connection: AsyncConnection | None = None) -> None:
        """Upgrade brama_sql's tables to the newest revision (:meth:`Brama.migrate`); pass
        ``connection`` to run on the host application's :class:`AsyncConnection`."""
        if connection is None:
            await bridge.run(self.sync.migrate)
            return
        if not isinstance(connection, AsyncConnection):
            raise ArgumentTypeError(
                f"connection must be an SQLAlchemy AsyncConnection, not {type(connection).__name__}"
            )
        await connection.run_sync(self._migrate_on)

    def _migrate_on(self, connection: Connection) -> None:
        self.sync.migrate(connection)

    # -- connections ------------------------------------------------------------------------

    async def register(
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
        """Start monitoring a connection (:meth:`Brama.register`)."""
        return await bridge.run(
            self.sync.register,
            identifier,
            scope=scope,
            metadata=metadata,
            failure_threshold=failure_threshold,
            expiry=expiry,
            half_open_max_calls=half_open_max_calls,
            probe_timeout=probe_timeout,
            exist_ok=exist_ok,
            **policies,
        )

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
        """Declare a connection and its options (:meth:`Brama.declare`); a plain method, as
        it does not touch the database."""
        self.sync.declare(
            identifier,
            scope=scope,
            metadata=metadata,
            failure_threshold=failure_threshold,
            expiry=expiry,
            half_open_max_calls=half_open_max_calls,
            probe_timeout=probe_timeout,
            **policies,
        )

    async def configure(
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
        """Change a connection's stored options (:meth:`Brama.configure`)."""
        return await bridge.run(
            self.sync.configure,
            identifier,
            scope=scope,
            metadata=metadata,
            failure_threshold=failure_threshold,
            expiry=expiry,
            half_open_max_calls=half_open_max_calls,
            probe_timeout=probe_timeout,
            **policies,
        )

    async def unregister(self, identifier: str, *, scope: str | None = None) -> bool:
        """Stop monitoring a connection (:meth:`Brama.unregister`)."""
        return await bridge.run(self.sync.unregister, identifier, scope=scope)

    async def available(self, identifier: str, *, scope: str | None = None) -> bool:
        """Whether a call may go through now (:meth:`Brama.available`); the probe permit it
        may claim belongs to the calling task."""
        return await bridge.run(self.sync.available, identifier, scope=scope)

    async def status(self, identifier: str, *, scope: str | None = None) -> ConnectionStatus:
        """The connection's circuit and its metrics, as of now (:meth:`Brama.status`)."""
        return await bridge.run(self.sync.status, identifier, scope=scope)

    async def connections(
        self, *, scope: str | _Every | None = EVERY_SCOPE
    ) -> list[ConnectionStatus]:
        """The status of every registered connection (:meth:`Brama.connections`)."""
        return await bridge.run(self.sync.connections, scope=scope)

    async def events(
        self,
        identifier: str | None = None,
        *,
        scope: str | _Every | None = EVERY_SCOPE,
        since: datetime | None = None,
        limit: int | None = None,
    ) -> list[Event]:
        """Logged events, oldest first (:meth:`Brama.events`)."""
        return await bridge.run(self.sync.events, identifier, scope=scope, since=since, limit=limit)

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
    ) -> AsyncIterator[Event]:
        """Logged events, oldest first, as an asynchronous iterator that reads the log in
        pages of ``page_size`` events (:meth:`Brama.stream_events`): ``async for event in
        brama.stream_events(...)``. A plain method: the arguments are checked at the call,
        and each page is read through the bridge when the loop asks for it."""
        pages = self.sync.stream_events(
            identifier,
            scope=scope,
            since=since,
            until=until,
            kinds=kinds,
            newest=newest,
            limit=limit,
            page_size=page_size,
        )
        return _paged(pages, page_size)

    async def report(
        self, since: datetime | timedelta | float, *, scope: str | _Every | None = EVERY_SCOPE
    ) -> Report:
        """What happened to each registered connection from ``since`` until now
        (:meth:`Brama.report`)."""
        return await bridge.run(self.sync.report, since, scope=scope)

    # -- reports ----------------------------------------------------------------------------

    async def success(
        self,
        identifier: str,
        *,
        scope: str | None = None,
        reason: str | None = None,
        duration: float | timedelta | None = None,
    ) -> Transition | None:
        """Report a successful call (:meth:`Brama.success`)."""
        return await bridge.run(
            self.sync.success, identifier, scope=scope, reason=reason, duration=duration
        )

    async def failure(
        self,
        identifier: str,
        *,
        scope: str | None = None,
        reason: str | None = None,
        duration: float | timedelta | None = None,
    ) -> Transition | None:
        """Report a failed call (:meth:`Brama.failure`)."""
        return await bridge.run(
            self.sync.failure, identifier, scope=scope, reason=reason, duration=duration
        )

    async def flush(self) -> None:
        """Does nothing: ``AsyncBrama`` has no batched reporting (:meth:`Brama.flush`)."""
        await bridge.run(self.sync.flush)

    # -- protected calls --------------------------------------------------------------------

    async def acquire(self, identifier: str, *, scope: str | None = None) -> AsyncPermit | None:
        """Ask for admission to one call, as a caller of its own (:meth:`Brama.acquire`): an
        :class:`AsyncPermit` whose coroutines report the outcome, or ``None`` when refused."""
        permit = await bridge.admit(functools.partial(self.sync.acquire, scope=scope), identifier)
        return None if permit is None else AsyncPermit(permit)

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
    ) -> AsyncGuard:
        """An asynchronous context manager protecting the call in its block, as
        :meth:`Brama.guard` does::

            async with brama.guard("payments-api", scope="payments") as permit:
                await charge_card()

        Each entry holds a permit of its own (:meth:`acquire`), so the tasks sharing a thread
        are separate callers. ``asyncio.CancelledError`` (a ``BaseException``) is never a
        failure: a cancelled block hands its permit back.
        """
        guard = self.sync.guard(
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
        return AsyncGuard(guard)

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
    ) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
        """A decorator for coroutine functions that runs every call in :meth:`guard` (same
        options), as :meth:`Brama.protect` does for plain functions::

            @brama.protect("payments-api", scope="payments", fallback=lambda order: None)
            async def charge(order): ...

        ``failure_if(result)`` (a plain predicate) true reports a returned value as a failure.
        ``fallback(*args, **kwargs)``, a plain or a coroutine function, is called with the
        call's own arguments when the circuit refuses, and its result (awaited when it is
        awaitable) returned instead of raising :class:`CircuitOpenError`. A function that is
        not a coroutine function raises :class:`ArgumentTypeError` at decoration.
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
        return protect_coroutines(
            guarded, checked_callable(failure_if, "failure_if"), _fallback(fallback)
        )

    # -- listeners --------------------------------------------------------------------------

    def on_state_change(self, callback: Callback) -> Listener:
        """Call ``callback(event)`` with every transition this object writes, after its
        transaction committed (:meth:`Brama.on_state_change`). The callback is a plain
        function, called in the event loop's thread: it must not block (to start
        asynchronous work, hand it to ``asyncio.get_running_loop().create_task(...)``)."""
        return self.sync.on_state_change(callback)

    # -- manual controls --------------------------------------------------------------------

    async def open(
        self, identifier: str, *, scope: str | None = None, reason: str | None = None
    ) -> None:
        """Force the circuit open now (:meth:`Brama.open`)."""
        await bridge.run(self.sync.open, identifier, scope=scope, reason=reason)

    async def close(
        self, identifier: str, *, scope: str | None = None, reason: str | None = None
    ) -> None:
        """Force the circuit closed and zero its failure count (:meth:`Brama.close`)."""
        await bridge.run(self.sync.close, identifier, scope=scope, reason=reason)

    async def reset(
        self, identifier: str, *, scope: str | None = None, reason: str | None = None
    ) -> None:
        """Return the circuit to a clean closed state (:meth:`Brama.reset`)."""
        await bridge.run(self.sync.reset, identifier, scope=scope, reason=reason)

    async def disable(
        self, identifier: str, *, scope: str | None = None, reason: str | None = None
    ) -> None:
        """Disable the circuit: always available, never trips (:meth:`Brama.disable`)."""
        await bridge.run(self.sync.disable, identifier, scope=scope, reason=reason)

    async def force_open(
        self, identifier: str, *, scope: str | None = None, reason: str | None = None
    ) -> None:
        """Hold the circuit open until closed or reset (:meth:`Brama.force_open`)."""
        await bridge.run(self.sync.force_open, identifier, scope=scope, reason=reason)

    # -- maintenance ------------------------------------------------------------------------

    async def cleanup(self) -> int:
        """Remove connections idle for ``inactive_after`` seconds (:meth:`Brama.cleanup`)."""
        return await bridge.run(self.sync.cleanup)

    async def prune(self, older_than: float | timedelta, *, batch_size: int = BATCH_SIZE) -> int:
        """Delete the events older than ``older_than`` into hourly rollups
        (:meth:`Brama.prune`)."""
        return await bridge.run(self.sync.prune, older_than, batch_size=batch_size)

    def start_cleaner(self, interval: float | timedelta = 60.0) -> AsyncCleaner:
        """Run :meth:`cleanup` every ``interval`` seconds in an asyncio task of the running
        loop (not a thread); returns the running :class:`AsyncCleaner` (await its
        ``stop()``)."""
        return AsyncCleaner(self, interval).start()

    async def dispose(self) -> None:
        """Wait for the calls still running, those whose callers were cancelled included (a
        report that began is written), then close the engine's pooled database connections
        (:meth:`Brama.dispose`). Call it before the event loop ends: a loop that ends first
        cancels such calls, and their transactions roll back."""
        await bridge.drain()
        await bridge.run(self.sync.dispose)


async def _paged(events: Iterator[Event], page_size: int) -> AsyncIterator[Event]:
    """The events of a synchronous stream, ``page_size`` at a time through the bridge."""
    while True:
        page = await bridge.run(_take, events, page_size)
        for event in page:
            yield event
        if len(page) < page_size:
            return


def _take(events: Iterator[Event], count: int) -> list[Event]:
    return list(itertools.islice(events, count))


def _fallback(value: object) -> Callable[..., Any] | None:
    """``None`` or a callable (a plain or a coroutine function), else
    :class:`ArgumentTypeError`."""
    if value is None:
        return None
    if not callable(value):
        raise ArgumentTypeError(f"fallback must be callable, not {type(value).__name__}")
    return value
