"""The greenlet bridge: how :class:`~brama_sql.AsyncBrama` runs brama_sql's synchronous
transactions on an asyncio engine without writing them twice.

An asyncio engine of SQLAlchemy has a synchronous face, ``AsyncEngine.sync_engine``, whose
driver calls suspend the greenlet they run in and await the asyncio driver under the event loop
(SQLAlchemy's ``greenlet_spawn``). :class:`BridgedBrama` is a :class:`~brama_sql.Brama` on that
engine; :func:`run` calls one of its methods in such a greenlet, in a task of its own shielded
from the caller's cancellation, so that a transaction once begun always ends (committed or
rolled back) and its listeners are told, even when the awaiting caller is cancelled.

Each asyncio task is a caller of its own (:meth:`BridgedBrama.actor` adds ``task-N`` to the
thread's actor), as each thread is for :class:`~brama_sql.Brama`: the probe permit that
``available()`` claims in one task is settled by that task's next report, not another's.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError, InvalidRequestError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import SingletonThreadPool, StaticPool
from sqlalchemy.util import greenlet_spawn

from brama_sql import engine as engines
from brama_sql.brama import Brama, _database_url, _shown
from brama_sql.errors import ArgumentTypeError, InvalidArgumentError
from brama_sql.permit import Permit

T = TypeVar("T")

logger = logging.getLogger("brama_sql")

ASYNC_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+psycopg",
    "mysql": "mysql+aiomysql",
    "mariadb": "mariadb+aiomysql",
}
"""The asyncio driver used for a URL that names only its database (``sqlite:///brama.db``,
``postgresql://...``, ``mysql://...``)."""

_tags: weakref.WeakKeyDictionary[asyncio.Future[Any], str] = weakref.WeakKeyDictionary()
"""The caller of each task: ``task-N`` for a task of the application, and for a bridged call's
task the tag of the task that made the call."""
_numbers = itertools.count(1)
_in_flight: set[asyncio.Task[Any]] = set()
"""The bridged calls not yet ended, whose callers may have stopped waiting (cancelled):
:func:`drain` waits for them."""


def task_tag() -> str | None:
    """``task-N`` naming the asyncio task running now (numbers are never reused within a
    process), or in a bridged call's task the caller it runs for; ``None`` outside any task."""
    try:
        task = asyncio.current_task()
    except RuntimeError:  # no running event loop
        return None
    if task is None:
        return None
    tag = _tags.get(task)
    if tag is None:
        tag = _tags[task] = f"task-{next(_numbers)}"
    return tag


async def run(function: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """``function(*args, **kwargs)`` run in SQLAlchemy's greenlet under the event loop, in a
    task of its own for the calling task (see the module); the caller's cancellation does not
    stop it, only the caller's wait for it."""
    inner = _start(function, *args, **kwargs)
    return await asyncio.shield(inner)


async def admit(function: Callable[..., Permit | None], /, *args: Any) -> Permit | None:
    """:func:`run` for a call that may hand out a :class:`~brama_sql.Permit`: when the caller
    is cancelled before it gets the permit, the permit is handed back (released) as soon as
    the call has made it, so that an abandoned admission does not keep a probe permit until
    ``probe_timeout``."""
    inner = _start(function, *args)
    try:
        return await asyncio.shield(inner)
    except asyncio.CancelledError:
        inner.add_done_callback(_hand_back)
        raise


def _start(function: Callable[..., T], /, *args: Any, **kwargs: Any) -> asyncio.Task[T]:
    """The task running ``function`` in the bridge for the calling task."""
    tag = task_tag()
    inner = asyncio.ensure_future(greenlet_spawn(function, *args, **kwargs))
    if tag is not None:
        _tags[inner] = tag  # before it first runs: ensure_future only schedules it
    _in_flight.add(inner)
    inner.add_done_callback(_in_flight.discard)
    inner.add_done_callback(_retrieved)
    return inner


async def drain() -> None:
    """Wait until every bridged call of the running event loop has ended, those whose callers
    were cancelled included (their transactions run on to the commit or the rollback)."""
    loop = asyncio.get_running_loop()
    while pending := [task for task in _in_flight if task.get_loop() is loop and not task.done()]:
        await asyncio.gather(*pending, return_exceptions=True)


def _hand_back(task: asyncio.Future[Permit | None]) -> None:
    """Release the permit an abandoned admission made, if it made one."""
    if task.cancelled() or task.exception() is not None:
        return
    permit = task.result()
    if permit is not None and not permit.settled:
        _start(permit.release).add_done_callback(_log_failed_release)


def _log_failed_release(task: asyncio.Future[None]) -> None:
    error = None if task.cancelled() else task.exception()
    if error is not None:
        logger.warning(
            "the permit of a cancelled admission could not be handed back (it expires after "
            "probe_timeout): %s",
            error,
        )


def _retrieved(task: asyncio.Future[Any]) -> None:
    """Mark the outcome of a bridged call as seen, also when its caller stopped waiting (it
    was cancelled): asyncio would otherwise log an error that nobody retrieved it."""
    if not task.cancelled():
        task.exception()


def async_url(url: str | URL) -> URL:
    """``url`` parsed, with the asyncio driver of its database when it names none."""
    parsed = _database_url(url)
    if parsed.drivername in ASYNC_DRIVERS:
        parsed = parsed.set(drivername=ASYNC_DRIVERS[parsed.drivername])
    return parsed


class BridgedBrama(Brama):
    """A :class:`~brama_sql.Brama` on the synchronous face of an asyncio engine, whose every
    database call must run through :func:`run`. Refuses ``batch_reports`` (its writer is a
    thread, outside the event loop)."""

    async_engine: AsyncEngine
    """The asyncio engine whose ``sync_engine`` this Brama uses."""

    def __init__(self, url: object, **options: Any) -> None:
        if options.get("batch_reports") is not None:
            raise InvalidArgumentError(
                "batch_reports is not available on AsyncBrama: its batches are written by a "
                "thread, outside the event loop (availability_cache is)",
                argument="batch_reports",
            )
        super().__init__(url, **options)  # type: ignore[arg-type]

    def _engine_for(self, url: object) -> tuple[Engine, bool]:
        if isinstance(url, AsyncEngine):
            if isinstance(url.sync_engine.pool, (StaticPool, SingletonThreadPool)):
                raise InvalidArgumentError(
                    f"AsyncBrama cannot use an engine whose pool is one connection "
                    f"({type(url.sync_engine.pool).__name__}): every task would share it and "
                    "interleave its transactions; use a pool of connections (and an SQLite "
                    "file, not an in-memory database)",
                    argument="url",
                )
            self.async_engine = url
            return url.sync_engine, False
        if isinstance(url, Engine):
            raise ArgumentTypeError(
                "AsyncBrama needs a database URL or an SQLAlchemy AsyncEngine, not a "
                "synchronous Engine (use Brama for that)"
            )
        if not isinstance(url, (str, URL)):
            raise ArgumentTypeError(
                f"url must be a database URL or an SQLAlchemy AsyncEngine, not {type(url).__name__}"
            )
        parsed = async_url(url)
        try:
            built = engines.build_async(parsed, self.lock_timeout, io_timeout=self.io_timeout)
        except (ArgumentError, InvalidRequestError) as error:
            raise InvalidArgumentError(
                f"url {_shown(parsed)} cannot be used by AsyncBrama: {error} (asyncio drivers: "
                "sqlite+aiosqlite, postgresql+psycopg, mysql+aiomysql)",
                argument="url",
            ) from error
        except ImportError as error:
            raise InvalidArgumentError(
                f"url {_shown(parsed)} needs a driver that is not installed ({error}): install "
                "brama_sql[async] (aiosqlite, aiomysql) and brama_sql[postgres] for PostgreSQL",
                argument="url",
            ) from error
        self.async_engine = built
        return built.sync_engine, True

    def _migrator(self) -> Engine:
        if not self._owns_engine:
            return self.engine
        migrating = engines.build_async(
            make_url(self.engine.url), self.lock_timeout, io_timeout=self.io_timeout, migrating=True
        )
        return migrating.sync_engine

    def actor(self) -> str:
        """``host:pid:instance:thread:task-N`` in an asyncio task (each task a caller of its
        own), else :meth:`Brama.actor`."""
        actor = super().actor()
        tag = task_tag()
        return actor if tag is None else f"{actor}:{tag}"[-255:]
