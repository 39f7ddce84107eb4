"""Transactions: how brama_sql runs one unit of work on the database.

:meth:`Transactions.run` gives a body a connection in one transaction and commits it; retries it
a bounded number of times when the database reports a deadlock or a serialization failure;
turns database failures into :class:`BramaDatabaseError` naming the operation; and, on an
engine the host application passed in, makes the per-dialect settings that
:func:`brama_sql.engine.build` makes on brama_sql's own engines when they connect.

It is fork-safe: in a forked child it never uses a connection the parent opened (see
:mod:`brama_sql.fork` and :meth:`Transactions._follow_fork`).
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any, TypeVar, cast

from sqlalchemy import event
from sqlalchemy.engine import Connection, Dialect, Engine
from sqlalchemy.exc import (
    DBAPIError,
    IntegrityError,
    OperationalError,
    ProgrammingError,
    SQLAlchemyError,
)
from sqlalchemy.pool import StaticPool

from brama_sql import engine as engines
from brama_sql import fork, migration, prepared, watchdog
from brama_sql.engine import WRITE, sqlite_in_transaction
from brama_sql.errors import (
    BramaDatabaseError,
    BramaError,
    ReportOutcomeUnknownError,
    SchemaError,
)
from brama_sql.prepared import Raw
from brama_sql.read_pool import ANSWERED, FAILED, READ, ReadConnection, ReadPool

T = TypeVar("T")

ATTEMPTS = 3
"""How often a transaction is tried when the database reports a deadlock or a serialization
failure (never for a lock wait timeout: that limit exists to give up)."""
RETRYABLE_SQLSTATES = {"40001", "40P01"}
RETRYABLE_MYSQL_ERRORS = {1213, 1020}
"""Deadlock, and MariaDB's "record has changed since last read" (snapshot isolation)."""
CONFIRM_PAUSE_S = 0.1
"""How long to wait between attempts to reach the database after a commit reply was lost."""
LOCK_WAIT = "brama_sql_lock_wait"
"""Key in a pooled connection's ``info``: the lock wait limit already set on its session."""


class Transactions:
    """Runs brama_sql's units of work on one SQLAlchemy engine.

    ``lock_wait`` bounds how long a write waits for a row lock, and every call ends within
    ``lock_wait + io_timeout`` (:meth:`run`). ``owns_engine`` tells whether
    brama_sql created the engine (:func:`brama_sql.engine.build` then made every session
    setting when the connection was opened); on a host's engine each write is prepared here
    (:meth:`_prepare_session`, :meth:`_begin_write`).

    In a forked child the engine gets a fresh pool before its first use there (see
    :meth:`_follow_fork`), the host's engine too.
    """

    def __init__(
        self,
        engine: Engine,
        lock_wait: float,
        owns_engine: bool,
        io_timeout: float = engines.IO_TIMEOUT_S,
    ) -> None:
        self.engine = engine
        self.lock_wait = lock_wait
        self.owns_engine = owns_engine
        self.io_timeout = io_timeout
        """The call's allowance beyond the lock wait; also what a new connection may take."""
        for made in ("first_connect", "connect"):  # before the dialect's and ours
            event.listen(engine, made, watchdog.adopt, insert=True)
        self._schema_checked = False
        dialect = engine.dialect
        self._marks_ends = owns_engine and dialect.name == "mysql" and not dialect.is_async
        """Whether a write whose transaction ended tells the pool it needs no rollback at
        check-in (see :func:`brama_sql.engine._roll_back_unless_ended`)."""
        self._read_pool = ReadPool.of(engine, owns_engine)
        """Where reads take their connections, on an engine that has one (see
        :mod:`brama_sql.read_pool`); else from the engine's pool."""
        # One DBAPI connection shared by all threads (in-memory SQLite): one user at a time.
        self._shared = isinstance(engine.pool, StaticPool)
        self._gate: AbstractContextManager[Any] = self._new_gate()
        self._pid = os.getpid()
        """The process whose connections the engine's pool holds."""
        self._following = threading.Lock()
        fork.register(self._after_fork)

    @property
    def gate(self) -> AbstractContextManager[Any]:
        """Held around every use of the engine when all threads share one connection. Taking
        it first makes sure that, in a forked child, the engine no longer holds the parent's
        connections (:meth:`_follow_fork`)."""
        return self._gate_in(os.getpid())

    def _gate_in(self, pid: int) -> AbstractContextManager[Any]:
        """:attr:`gate`, in the process ``pid`` (this one's id, read by the caller)."""
        if self._pid != pid:
            self._follow_fork()
        return self._gate

    def _new_gate(self) -> AbstractContextManager[Any]:
        return threading.RLock() if self._shared else nullcontext()

    def _after_fork(self) -> None:
        """Called by :mod:`brama_sql.fork` in a forked child, in its only thread: a lock of
        the parent's may have been held at the moment of the fork."""
        self._following = threading.Lock()
        self._follow_fork()

    def _follow_fork(self) -> None:
        """Make this process the owner of the engine's connections, once per process: the
        at-fork handler calls it, and :attr:`gate` does on the first use after a fork that
        skipped Python's at-fork handlers (a fork in C code, such as uWSGI's).

        The engine gets a fresh pool and never touches the parent's connections
        (:func:`brama_sql.fork.renew_pool`, the host's engine included); the parent keeps
        using them. A ``StaticPool`` engine (in-memory SQLite) keeps its one connection: the
        child has its own copy of that database from the moment of the fork, and it lives
        only in that connection; an in-memory database is per process. Its gate is created
        anew, as a thread of the parent may have held it at the fork."""
        pid = os.getpid()
        with self._following:
            if self._pid == pid:
                return
            if self._shared:
                self._gate = self._new_gate()
            else:
                fork.renew_pool(self.engine)
            if self._read_pool is not None:
                self._read_pool = self._read_pool.forked()
            self._pid = pid

    def dispose(self) -> None:
        """Close the engine's pooled connections and the read pool's idle ones (in a forked
        child that has not used them yet, only its own)."""
        with self.gate:
            if self._read_pool is not None:
                self._read_pool.close()
            self.engine.dispose()

    def run(
        self,
        operation: str,
        body: Callable[[Connection], T],
        *,
        write: bool,
        on_conflict: Callable[[IntegrityError], BramaError | None] | None = None,
        retry_if: Callable[[IntegrityError], bool] | None = None,
        confirm: Callable[[Connection], bool] | None = None,
    ) -> T:
        """Run ``body`` in one transaction and commit, within the call's time bound
        (``lock_wait`` plus ``io_timeout`` from now; :mod:`brama_sql.watchdog` cuts a
        connection still busy then).

        Tried again, while the bound leaves time for it: a transaction the database rolled
        back for a deadlock or a serialization failure, or because its connection was lost
        before the commit (nothing was written: a pooled connection the server closed, a
        session killed); a transaction that lost an insert race for which ``retry_if(error)``
        is true (the next attempt finds the row); and a write whose commit reply was lost,
        when ``confirm`` finds its writes missing. ``confirm(conn)`` tells, in a transaction
        of its own on a new connection, whether the writes of the lost commit are in the
        database; if they are, the body's result is returned. When the database stays away
        for the rest of the bound, :class:`ReportOutcomeUnknownError` is raised. A write
        without ``confirm`` whose commit reply is lost raises :class:`BramaDatabaseError`.

        Database failures become :class:`BramaDatabaseError` naming ``operation``, and an
        integrity error what ``on_conflict(error)`` returns, if anything.
        """
        deadline = watchdog.monotonic() + self.lock_wait + self.io_timeout
        lost: _CommitUnknown | None = None
        """The last attempt whose commit reply was lost, while it is not known to be absent."""
        attempt = 0
        while True:
            attempt += 1
            try:
                with self.gate:
                    return self._once(body, write, deadline)
            except _CommitUnknown as unknown:
                if confirm is None:
                    raise BramaDatabaseError(operation, unknown.cause) from unknown.cause
                if self._committed(operation, confirm, deadline, unknown):
                    return cast(T, unknown.result)
                lost = unknown  # its writes are not there; an earlier attempt's are not either
                attempt = 0
                continue
            except SQLAlchemyError as error:
                if lost is not None and self._committed(operation, confirm, deadline, lost):
                    # A rolled-back retry after a lost reply: the lost commit went through.
                    return cast(T, lost.result)
                if self._again(error, attempt, deadline, retry_if):
                    _pause(attempt)
                    continue
                raise self._failure(operation, error, on_conflict) from error

    def read(self, operation: str, body: Callable[[Raw], T]) -> T:
        """Run the read ``body`` as :meth:`run` does (``write=False``: tried again on a lost
        connection, within the call's time bound, its failures turned into
        :class:`BramaDatabaseError`), on a pooled DBAPI connection without SQLAlchemy's
        ``Connection`` around it (:class:`~brama_sql.prepared.Raw`): the reads of every call,
        whose statements are all :class:`~brama_sql.prepared.Prepared`, spare its cost.

        Before the schema was checked, and on an engine with statement listeners, the body
        runs on a ``Connection``, through :meth:`run`.
        """
        if not self._schema_checked or prepared.traced(self.engine):
            return self.run(operation, body, write=False)  # type: ignore[arg-type]
        deadline = watchdog.monotonic() + self.lock_wait + self.io_timeout
        pid = os.getpid()  # one system call for the gate and the watchdog
        attempt = 0
        while True:
            attempt += 1
            try:
                gate = self._gate_in(pid)
                if not self._shared:  # the gate is a null context: spare its two calls
                    return self._read_once(body, deadline, pid)
                with gate:
                    return self._read_once(body, deadline, pid)
            except SQLAlchemyError as error:
                if self._again(error, attempt, deadline, None):
                    _pause(attempt)
                    continue
                raise self._failure(operation, error, None) from error

    def _read_once(self, body: Callable[[Raw], T], deadline: float, pid: int) -> T:
        reads = self._read_pool
        taken: list[ReadConnection] = []
        raw: Raw | None = None
        outcome = FAILED
        try:
            with watchdog.watching(deadline, pid) as watch:
                try:
                    connection = None if reads is None else reads.take()
                except self.engine.dialect.loaded_dbapi.Error as error:
                    raise self._not_connected(error) from error
                if connection is None:
                    return self._read_pooled(body, watch)
                taken.append(connection)
                raw = Raw(connection, self.engine)
                watch.attach(connection.dbapi_connection)
                try:
                    result = body(raw)
                except BramaError:
                    # The body's own answer (a connection not registered), raised after its
                    # statements ran: the connection is sound, unless the read left it otherwise.
                    outcome = ANSWERED
                    raise
                outcome = READ
                return result
        finally:
            # Settled once the watch is disarmed (it is never cut after that): a connection
            # given back while armed could be cut in another thread's read.
            if taken:
                assert reads is not None
                lost = raw is not None and raw.invalidated
                reads.settle(taken[0], outcome, cut=watch.cut, lost=lost)

    def _read_pooled(self, body: Callable[[Raw], T], watch: watchdog.Watch) -> T:
        """Run a read on a connection from the engine's pool (in autocommit on PostgreSQL)."""
        dialect = self.engine.dialect
        try:
            fairy = self.engine.raw_connection()
        except dialect.loaded_dbapi.Error as error:
            raise self._not_connected(error) from error
        raw = Raw(fairy, self.engine)
        dbapi_connection = fairy.dbapi_connection
        assert dbapi_connection is not None
        watch.attach(dbapi_connection)
        # As in _transaction: on PostgreSQL a read runs outside a transaction.
        autocommit = self.owns_engine and dialect.name == "postgresql"
        try:
            if autocommit:
                _autocommit(dialect, dbapi_connection, True)
            try:
                return body(raw)
            finally:
                if autocommit and not raw.invalidated:
                    try:
                        _autocommit(dialect, dbapi_connection, False)
                    except Exception as error:  # never back into the pool half reset
                        raw.invalidate(error)
        finally:
            if watch.cut and not raw.invalidated:
                raw.invalidate()  # its socket is shut: never back into the pool
            fairy.close()

    def _not_connected(self, error: Any) -> DBAPIError:
        """SQLAlchemy's error for the driver's ``error`` while connecting (the pool hands it on
        unwrapped), marked lost when it is one, so that the read is tried again."""
        dialect = self.engine.dialect
        lost = dialect.is_disconnect(error, None, None)
        wrapped = DBAPIError.instance(
            None, None, error, dialect.loaded_dbapi.Error, connection_invalidated=lost
        )
        assert isinstance(wrapped, DBAPIError)  # the driver's own errors are its subclasses
        return wrapped

    def _again(
        self,
        error: SQLAlchemyError,
        attempt: int,
        deadline: float,
        retry_if: Callable[[IntegrityError], bool] | None,
    ) -> bool:
        """Whether a failed attempt that wrote nothing is worth another one."""
        if attempt >= ATTEMPTS or watchdog.monotonic() + self.io_timeout > deadline:
            return False
        if isinstance(error, IntegrityError):
            return retry_if is not None and retry_if(error)
        if isinstance(error, DBAPIError):
            return error.connection_invalidated or _retryable(error)
        return False

    def _failure(
        self,
        operation: str,
        error: SQLAlchemyError,
        on_conflict: Callable[[IntegrityError], BramaError | None] | None,
    ) -> BramaError:
        """The error the caller gets for a failed transaction."""
        if isinstance(error, IntegrityError):
            conflict = None if on_conflict is None else on_conflict(error)
            if conflict is not None:
                return conflict
        if isinstance(error, DBAPIError):
            if _missing_table(error):
                self._schema_checked = False
                with self.gate:
                    self._recheck_schema(error)
            return BramaDatabaseError(operation, error.orig or error)
        return BramaDatabaseError(operation, error)

    def _committed(
        self,
        operation: str,
        confirm: Callable[[Connection], bool] | None,
        deadline: float,
        unknown: _CommitUnknown,
    ) -> bool:
        """Whether the writes of a commit whose reply was lost are in the database: asked on
        a new connection, again and again while the deadline leaves time for a connection to
        be made; after that, the outcome is unknown."""
        assert confirm is not None
        failure: BaseException = unknown.cause
        while deadline - watchdog.monotonic() >= self.io_timeout:
            try:
                with self.gate:
                    return self._once(confirm, True, deadline)
            except (SQLAlchemyError, _CommitUnknown) as error:
                failure = error
                sleep(min(CONFIRM_PAUSE_S, max(0.0, deadline - watchdog.monotonic())))
        raise ReportOutcomeUnknownError(operation, unknown.cause) from failure

    def _once(self, body: Callable[[Connection], T], write: bool, deadline: float) -> T:
        with watchdog.watching(deadline) as watch, self.engine.connect() as conn:
            watch.attach(conn.connection.dbapi_connection)
            try:
                return self._transaction(conn, body, write)
            finally:
                if watch.cut and not conn.invalidated:
                    conn.invalidate()  # its socket is shut: never back into the pool

    def _transaction(self, conn: Connection, body: Callable[[Connection], T], write: bool) -> T:
        self._ensure_schema(conn)
        if write:
            conn.execution_options(**WRITE)
            if not self.owns_engine:
                self._prepare_session(conn)
        elif self.owns_engine and conn.dialect.name == "postgresql":
            # A read needs no transaction (each of its statements reads one snapshot), and
            # outside one the server's orphan lock limit cannot end a long read.
            _isolate(conn, "AUTOCOMMIT")
        if not write:
            # A read needs no COMMIT: the pool's rollback at check-in ends whatever the driver
            # began (on MariaDB/MySQL a COMMIT would be one more round trip per read).
            return body(conn)
        committing = False
        try:
            with conn.begin():
                if write and not self.owns_engine:
                    self._begin_write(conn)
                result = body(conn)
                committing = True
        except DBAPIError as error:
            if committing and write:
                raise _CommitUnknown(result, error) from error
            raise
        except Exception:
            # The body's own answer (a connection not registered, a healthy success that needs
            # the exclusive lock): the transaction was rolled back (a rollback that failed
            # raises its own DBAPIError instead).
            if self._marks_ends:
                conn.info[engines.ENDED] = True
            raise
        if self._marks_ends:
            conn.info[engines.ENDED] = True  # committed: nothing to roll back at check-in
        return result

    def _prepare_session(self, conn: Connection) -> None:
        """On a connection of the host's engine, make the session settings that
        :func:`brama_sql.engine.build` makes on brama_sql's own when they connect: the lock
        wait limit (MySQL and SQLite have no transaction-local form of it) and, on the servers,
        READ COMMITTED for this use of the connection, whatever level the host chose
        (AUTOCOMMIT would release the row lock at once; REPEATABLE READ would fail racing
        writers instead of queueing them). SQLAlchemy restores the host's level after."""
        dialect = conn.dialect.name
        if dialect in ("postgresql", "mysql"):
            _isolate(conn, "READ COMMITTED")
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
        transaction-local lock wait limit and orphan lock limit; on SQLite, ``BEGIN IMMEDIATE``
        when the driver would otherwise begin lazily (its reads would then run outside the
        transaction)."""
        dialect = conn.dialect.name
        if dialect == "postgresql":
            wait = engines.milliseconds(self.lock_wait)
            idle = engines.milliseconds(engines.orphan_lock_limit(self.lock_wait))
            conn.exec_driver_sql(
                f"SET LOCAL lock_timeout = {wait}; "
                f"SET LOCAL idle_in_transaction_session_timeout = {idle}"
            )
        elif dialect == "sqlite":
            driver = conn.connection.dbapi_connection
            if driver is not None and not sqlite_in_transaction(driver):
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


class _CommitUnknown(Exception):
    """A write transaction's COMMIT failed in flight: it may have been committed."""

    def __init__(self, result: object, cause: DBAPIError) -> None:
        super().__init__(str(cause))
        self.result = result
        self.cause = cause.orig or cause


def _autocommit(dialect: Dialect, dbapi_connection: Any, on: bool) -> None:
    """Turn autocommit on or back off on a PostgreSQL driver connection (a read's): psycopg 3's
    one attribute, which leaves the isolation level of its transactions as it was; another
    driver's through its dialect (which sets the isolation level too, then restores the
    engine's)."""
    if dialect.driver == "psycopg":
        dbapi_connection.autocommit = on
    elif on:
        dialect.set_isolation_level(dbapi_connection, "AUTOCOMMIT")
    else:
        dialect.reset_isolation_level(dbapi_connection)


def _isolate(conn: Connection, level: str) -> None:
    """Use ``conn`` at isolation ``level`` (SQLAlchemy restores the engine's when it goes back
    to the pool). SQLAlchemy makes the change on the driver without wrapping the driver's
    errors, and on MySQL that is a statement: a pooled connection the server closed fails here
    first. Its error is wrapped and the connection thrown away, with every pooled connection made
    before it (as SQLAlchemy does after a lost connection: a restart or a reset broke them all),
    so that the call is retried on a new connection like after any lost connection."""
    try:
        conn.execution_options(isolation_level=level)
    except conn.dialect.loaded_dbapi.Error as error:
        if conn.dialect.is_disconnect(error, conn.connection.dbapi_connection, None):
            conn.engine.pool._invalidate(conn.connection, error, _checkin=False)
        conn.invalidate()
        raise OperationalError(
            f"isolation level {level}", None, error, connection_invalidated=True
        ) from error


def _pause(attempt: int) -> None:
    """A short random wait before another attempt, longer after each, so that racing writers
    do not collide again in step."""
    sleep(random.uniform(0.005, 0.02) * attempt)


def sleep(seconds: float) -> None:
    """Wait ``seconds``: in a thread, by sleeping; in a call of :class:`~brama_sql.AsyncBrama`
    (run in SQLAlchemy's greenlet under the event loop), by awaiting :func:`asyncio.sleep`,
    so that the loop's other tasks run meanwhile."""
    if _in_bridge():
        from sqlalchemy.util import await_only

        await_only(asyncio.sleep(seconds))
    else:
        time.sleep(seconds)


def _in_bridge() -> bool:
    """Whether this runs in SQLAlchemy's greenlet bridge (never without greenlet installed)."""
    if "greenlet" not in sys.modules:
        return False
    from sqlalchemy.util.concurrency import in_greenlet

    return in_greenlet()


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
