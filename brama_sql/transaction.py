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

import os
import random
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any, TypeVar

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, IntegrityError, ProgrammingError, SQLAlchemyError
from sqlalchemy.pool import StaticPool

from brama_sql import engine as engines
from brama_sql import fork, migration
from brama_sql.engine import WRITE
from brama_sql.errors import BramaDatabaseError, BramaError, SchemaError

T = TypeVar("T")

ATTEMPTS = 3
"""How often a transaction is tried when the database reports a deadlock or a serialization
failure (never for a lock wait timeout: that limit exists to give up)."""
RETRYABLE_SQLSTATES = {"40001", "40P01"}
RETRYABLE_MYSQL_ERRORS = {1213, 1020}
"""Deadlock, and MariaDB's "record has changed since last read" (snapshot isolation)."""
LOCK_WAIT = "brama_sql_lock_wait"
"""Key in a pooled connection's ``info``: the lock wait limit already set on its session."""


class Transactions:
    """Runs brama_sql's units of work on one SQLAlchemy engine.

    ``lock_wait`` bounds how long a write waits for a row lock. ``owns_engine`` tells whether
    brama_sql created the engine (:func:`brama_sql.engine.build` then made every session
    setting when the connection was opened); on a host's engine each write is prepared here
    (:meth:`_prepare_session`, :meth:`_begin_write`).

    In a forked child the engine gets a fresh pool before its first use there (see
    :meth:`_follow_fork`), the host's engine too.
    """

    def __init__(self, engine: Engine, lock_wait: float, owns_engine: bool) -> None:
        self.engine = engine
        self.lock_wait = lock_wait
        self.owns_engine = owns_engine
        self._schema_checked = False
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
        if self._pid != os.getpid():
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
            self._pid = pid

    def run(
        self,
        operation: str,
        body: Callable[[Connection], T],
        *,
        write: bool,
        on_conflict: Callable[[IntegrityError], BramaError | None] | None = None,
        retry_if: Callable[[IntegrityError], bool] | None = None,
    ) -> T:
        """Run ``body`` in one transaction and commit; retry deadlocks a bounded number of
        times, and integrity errors for which ``retry_if(error)`` is true (another writer
        inserted the same row first: the next attempt finds it); turn database failures into
        :class:`BramaDatabaseError` naming ``operation``, and an integrity error into what
        ``on_conflict(error)`` returns, if anything."""
        for attempt in range(1, ATTEMPTS + 1):
            try:
                with self.gate:
                    return self._once(body, write)
            except IntegrityError as error:
                if attempt < ATTEMPTS and retry_if is not None and retry_if(error):
                    _pause(attempt)
                    continue
                conflict = None if on_conflict is None else on_conflict(error)
                if conflict is not None:
                    raise conflict from error
                raise BramaDatabaseError(operation, error.orig or error) from error
            except DBAPIError as error:
                if attempt < ATTEMPTS and _retryable(error):
                    _pause(attempt)
                    continue
                if _missing_table(error):
                    self._schema_checked = False
                    with self.gate:
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
        wait limit (MySQL and SQLite have no transaction-local form of it) and, on the servers,
        READ COMMITTED for this use of the connection, whatever level the host chose
        (AUTOCOMMIT would release the row lock at once; REPEATABLE READ would fail racing
        writers instead of queueing them). SQLAlchemy restores the host's level after."""
        dialect = conn.dialect.name
        if dialect in ("postgresql", "mysql"):
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


def _pause(attempt: int) -> None:
    """A short random wait before another attempt, longer after each, so that racing writers
    do not collide again in step."""
    time.sleep(random.uniform(0.005, 0.02) * attempt)


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
