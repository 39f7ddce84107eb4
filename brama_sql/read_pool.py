"""The read pool: a few connections of an engine brama_sql owns, set aside for its reads and
kept in autocommit mode.

Every ``available()`` and ``status()`` is one read. Taken from SQLAlchemy's pool, its
connection costs a checkout and a check-in (a proxy object, a weak reference, the queue's
locks, the reset's rollback) and, on PostgreSQL, autocommit switched on and off again: about
60 µs of Python on this project's machines, as much as the driver spends on the statement
itself. A :class:`ReadPool` keeps its connections out of SQLAlchemy's pool, in autocommit for
good, on a stack that a thread pops and pushes back: nothing runs per read beyond that and a
lock around the push.

What it keeps, and when it lets go:

- At most ``capacity`` connections (the engine pool's ``size()``, 5 by default), each taken
  from the engine's pool (so opened with its connect-time session settings and listeners) and
  detached from it (``detach()``): the pool's place for it is free again, and the pool keeps
  its whole capacity for the writes. A read that finds the stack empty while ``capacity``
  connections are in use takes a pooled connection, as before.
- A connection whose read failed, or that the watchdog cut, is closed, never pushed back. A
  read that answered with one of brama_sql's errors after its statements ran (``status()`` of
  a connection not registered) is no failure of its connection: that one goes back.
  After a lost connection (a server restart or a network reset breaks them all) every idle one
  is closed too, so that the retry connects anew; not after a cut, which ends one slow read.
- :meth:`ReadPool.close` closes the idle ones (``dispose()``); one in use then is closed when
  its read ends.
- In a forked child, :meth:`ReadPool.forked` gives a new, empty pool and keeps the parent's
  connections alive there, untouched (see :mod:`brama_sql.fork`).

The drivers it knows (:data:`DRIVERS`): psycopg 3 (PostgreSQL, synchronous), PyMySQL
(MariaDB/MySQL) and sqlite3 (an SQLite file). Every statement of a read then runs in a
transaction of its own, which is all any read of brama_sql needs (each reads one snapshot; on
MariaDB and MySQL the session's READ COMMITTED gives the reads in a transaction no more than
that). On MariaDB it also spares the ``ROLLBACK`` round trip of each check-in. Other engines
(asyncio drivers, other DBAPI drivers, an in-memory SQLite database's one shared connection)
read through SQLAlchemy's pool.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Protocol

from sqlalchemy.engine import Engine
from sqlalchemy.pool import QueuePool

from brama_sql import fork, watchdog


class Driver(Protocol):
    """How the read pool keeps one DBAPI driver's connections in autocommit."""

    def autocommit(self, dbapi_connection: Any) -> None:
        """Switch the connection to autocommit, for good."""

    def between_statements(self, dbapi_connection: Any) -> bool:
        """Whether the connection is open and idle, outside any transaction."""


class _Psycopg:
    def autocommit(self, dbapi_connection: Any) -> None:
        dbapi_connection.autocommit = True

    def between_statements(self, dbapi_connection: Any) -> bool:
        from psycopg.pq import TransactionStatus  # only psycopg's engines use this driver

        if dbapi_connection.closed:
            return False
        return bool(dbapi_connection.info.transaction_status == TransactionStatus.IDLE)


class _PyMySQL:
    def autocommit(self, dbapi_connection: Any) -> None:
        dbapi_connection.autocommit(True)  # one round trip, when the connection is taken

    def between_statements(self, dbapi_connection: Any) -> bool:
        from pymysql.constants.SERVER_STATUS import SERVER_STATUS_IN_TRANS

        if not dbapi_connection.open:
            return False
        return not dbapi_connection.server_status & SERVER_STATUS_IN_TRANS


class _Sqlite3:
    def autocommit(self, dbapi_connection: Any) -> None:
        # brama_sql's SQLite engines set this as they connect (they begin transactions
        # themselves); the driver then begins none.
        dbapi_connection.isolation_level = None

    def between_statements(self, dbapi_connection: Any) -> bool:
        try:
            return not dbapi_connection.in_transaction
        except Exception:  # closed
            return False


DRIVERS: dict[tuple[str, str], Driver] = {
    ("postgresql", "psycopg"): _Psycopg(),
    ("mysql", "pymysql"): _PyMySQL(),
    ("sqlite", "pysqlite"): _Sqlite3(),
}
"""The drivers a read pool is made for, by SQLAlchemy's dialect and driver names."""


READ, ANSWERED, FAILED = "read", "answered", "failed"
"""How a read on a read connection ended (:meth:`ReadPool.settle`): it read, its body answered
with one of brama_sql's errors after its statements ran, or it failed."""


class ReadConnection:
    """One connection of a :class:`ReadPool`, with the part of a pooled connection's interface
    that :func:`~brama_sql.prepared.execute` uses (``dbapi_connection``, ``info``,
    ``invalidate``)."""

    __slots__ = ("dbapi_connection", "generation", "info", "invalidated")

    def __init__(self, dbapi_connection: Any, generation: int) -> None:
        self.dbapi_connection = dbapi_connection
        self.generation = generation
        """The pool's generation when it was made: one made before the pool last let go of its
        connections is closed instead of being pushed back."""
        self.info: dict[str, Any] = {}
        """What is kept with the connection (its cursor, see :mod:`brama_sql.prepared`)."""
        self.invalidated = False

    def invalidate(self, _error: BaseException | None = None) -> None:
        """Close the connection: it is never used again."""
        self.invalidated = True
        _close(self.dbapi_connection)


class ReadPool:
    """The connections an owned engine keeps for its reads (see the module's docs)."""

    def __init__(self, engine: Engine, capacity: int, driver: Driver) -> None:
        self.engine = engine
        self.capacity = capacity
        self.driver = driver
        self._idle: list[ReadConnection] = []
        self._count = 0
        """The connections made and not closed yet, idle or in use."""
        self._generation = 0
        self._lock = threading.Lock()

    @classmethod
    def of(cls, engine: Engine, owns_engine: bool) -> ReadPool | None:
        """The read pool of ``engine``, or ``None`` where reads take pooled connections: an
        engine the host passed in (its pool and its events are the host's), a driver not in
        :data:`DRIVERS` (an asyncio one), a pool that is not a queue (one shared connection,
        one per thread, none kept)."""
        dialect = engine.dialect
        pool = engine.pool
        driver = DRIVERS.get((dialect.name, dialect.driver))
        if not owns_engine or driver is None or dialect.is_async:
            return None
        if not isinstance(pool, QueuePool) or pool.size() < 1:
            return None
        return cls(engine, pool.size(), driver)

    def take(self) -> ReadConnection | None:
        """An idle connection, or a new one while fewer than ``capacity`` exist; ``None`` when
        all are in use (the read then takes a pooled connection). A new connection is made in
        the calling thread, and switched to autocommit, under the caller's watch (see
        :func:`brama_sql.watchdog.adopt`)."""
        while True:
            try:
                idle = self._idle.pop()
            except IndexError:
                break
            if idle.generation == self._generation:
                return idle
            self.discard(idle)  # popped from the stack close() was emptying
        with self._lock:
            if self._count >= self.capacity:
                return None
            self._count += 1
            generation = self._generation
        try:
            # Its record goes back to the engine's pool empty: the pool opens a connection
            # in its place when it next needs one.
            fairy = self.engine.raw_connection()
            dbapi_connection: Any = fairy.dbapi_connection
            try:
                # A round trip on PyMySQL: under the call's watch, as the connect is.
                watchdog.adopt(dbapi_connection)
                self.driver.autocommit(dbapi_connection)
                fairy.detach()
            except BaseException as error:
                self._throw_away(fairy, dbapi_connection, error)
                raise
        except BaseException:
            with self._lock:
                if generation == self._generation:  # else close() reset the count meanwhile
                    self._count -= 1
            raise
        return ReadConnection(dbapi_connection, generation)

    def _throw_away(self, fairy: Any, dbapi_connection: Any, error: BaseException) -> None:
        """Close a pooled connection whose switch to autocommit failed (never back into the
        pool half switched). A lost one (a pooled connection the server closed, or that a
        network reset broke) also marks every connection the pool made before it, as
        SQLAlchemy does: the retry then connects anew instead of taking the next broken one."""
        dialect = self.engine.dialect
        if isinstance(error, dialect.loaded_dbapi.Error) and dialect.is_disconnect(
            error, dbapi_connection, None
        ):
            self.engine.pool._invalidate(fairy, error)
        else:
            fairy.invalidate(error)

    def give_back(self, connection: ReadConnection) -> None:
        """Push a connection whose read succeeded back onto the stack, unless the pool let go
        of its connections since it was taken (then it is closed)."""
        with self._lock:  # not pushed onto the stack close() just emptied
            if connection.generation == self._generation and not connection.invalidated:
                self._idle.append(connection)
                return
        self.discard(connection)

    def settle(self, connection: ReadConnection, outcome: str, *, cut: bool, lost: bool) -> None:
        """After a read (its call's watch disarmed, see :mod:`brama_sql.watchdog`): give the
        connection back, or close it if the watchdog ``cut`` it or the read failed (after a
        ``lost`` connection the idle ones too: a server restart or a network reset breaks them
        all; not after a cut, which ends one slow read). ``outcome`` is :data:`READ`,
        :data:`ANSWERED` or :data:`FAILED`."""
        if not cut and (
            outcome == READ or (outcome == ANSWERED and self.between_statements(connection))
        ):
            self.give_back(connection)
            return
        self.discard(connection)
        if outcome == FAILED and lost and not cut:
            self.close()

    def between_statements(self, connection: ReadConnection) -> bool:
        """Whether ``connection`` is open and idle, outside any transaction, as a read that
        ran to its end leaves it (not one a statement was interrupted on)."""
        if connection.invalidated:
            return False
        return self.driver.between_statements(connection.dbapi_connection)

    def discard(self, connection: ReadConnection) -> None:
        """Close a connection taken from the pool (its read failed, or was cut)."""
        if not connection.invalidated:
            connection.invalidate()
        with self._lock:
            if connection.generation == self._generation:
                self._count -= 1

    def close(self) -> None:
        """Close every idle connection; those in use are closed when their reads end. The
        pool stays usable: the next read makes a new connection."""
        with self._lock:
            self._generation += 1
            self._count = 0
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.invalidate()

    def forked(self) -> ReadPool:
        """A new, empty pool for a forked child; this one, holding the parent's connections,
        is kept alive and never touched again (closing a connection there could end the
        parent's session on the server)."""
        fork.abandon(self)
        return ReadPool(self.engine, self.capacity, self.driver)


def _close(dbapi_connection: Any) -> None:
    with contextlib.suppress(Exception):  # already broken: nothing left to close
        dbapi_connection.close()
