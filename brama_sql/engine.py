"""Engines: the ones brama_sql creates from a URL, and what each dialect needs to lock rows."""

from __future__ import annotations

import logging
import math
import sqlite3
from typing import TYPE_CHECKING, Any

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.pool import StaticPool

from brama_sql import prepared
from brama_sql.errors import InvalidArgumentError
from brama_sql.types import load_json

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

logger = logging.getLogger("brama_sql")

DEFAULT_URL = "sqlite:///brama.db"
WRITE = {"brama_sql_write": True}
"""Execution options of a connection that will write: on SQLite it begins ``IMMEDIATE``."""
IO_TIMEOUT_S = 2.0
"""The default allowance of a call for connecting and for the server's answers, on top of its
lock wait limit (``Brama(io_timeout=...)``): a new connection may take this long, and a call
ends within ``lock_timeout + io_timeout`` (see :mod:`brama_sql.watchdog`)."""
TCP_USER_TIMEOUT_S = 30
"""PostgreSQL's ``tcp_user_timeout`` and the client's TCP keepalives: a connection whose peer
vanished is dropped by the kernel after about this long, also when no call is running."""


MIGRATION_WAIT_S = 120
"""How long a migration may wait for SQLite's write lock (another process migrating)."""
SYNCHRONOUS = "synchronous"
"""The query parameter of an SQLite URL that chooses how durable a commit is:
``?synchronous=full`` (the default) or ``?synchronous=normal`` (see :func:`build`)."""
SYNCHRONOUS_MODES = ("full", "normal")


def build(
    url: str | URL,
    lock_timeout: float,
    *,
    io_timeout: float = IO_TIMEOUT_S,
    migrating: bool = False,
) -> Engine:
    """Create an engine for ``url`` that brama_sql owns, with its session settings made once
    per pooled connection, when it connects.

    ``migrating`` builds the short-lived engine of :meth:`Brama.migrate`: no lock wait limit
    and no read timeout, since a migration may wait for another process's migration and
    its DDL may take long; only the connect timeout stays.

    - PostgreSQL: ``lock_timeout``; ``idle_in_transaction_session_timeout`` (see
      :func:`orphan_lock_limit`) and server-side TCP keepalives, so that the server ends the
      transaction of a client that vanished while holding a row lock; ``jit=off`` and the
      time zone UTC (unless the URL's options say otherwise); a connect timeout; client TCP
      keepalives and a user timeout.
    - MySQL/MariaDB: ``innodb_lock_wait_timeout`` (whole seconds), READ COMMITTED (a locking
      read and the plain reads after it then see the same, latest rows, and no gap locks),
      on MariaDB ``idle_transaction_timeout`` (the orphan lock limit), connect, read and write
      timeouts.
    - SQLite: WAL journaling, ``synchronous=FULL`` (every commit on disk before it returns;
      the URL's ``?synchronous=normal`` opts into NORMAL, which a power loss or OS crash may
      cost the last commits), the busy timeout, and transactions that brama_sql begins itself:
      ``BEGIN IMMEDIATE`` for a write (the database's write lock is taken before the row is
      read: SQLite's ``SELECT ... FOR UPDATE``), and no ``BEGIN`` for a read (each of its
      statements reads its own snapshot).

    Pooled connections are not pinged before use (a round trip per call, and one that could
    wait out a whole read timeout): a connection the server closed fails on its first
    statement, before anything was written, and :meth:`Transactions.run` runs the transaction
    again on a new one.
    """
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    connect = max(1, math.ceil(io_timeout))
    if backend in ("postgresql", "mysql") and migrating:
        arguments = _unless_in(parsed, {}, connect_timeout=max(connect, 5))
        return create_engine(parsed, connect_args=arguments, json_deserializer=load_json)
    if backend == "postgresql":
        arguments = _postgresql_arguments(parsed, lock_timeout, connect)
        return create_engine(parsed, connect_args=arguments, json_deserializer=load_json)
    if backend == "mysql":
        engine = create_engine(
            parsed,
            json_deserializer=load_json,
            isolation_level="READ COMMITTED",
            connect_args=_mysql_arguments(parsed, lock_timeout, io_timeout),
            pool_reset_on_return=None,  # see _roll_back_unless_ended
        )
        _prepare_mysql_sessions(engine, lock_timeout, io_timeout)
        _roll_back_unless_ended(engine)
        return engine
    if backend != "sqlite":
        return create_engine(parsed, pool_pre_ping=True, json_deserializer=load_json)
    synchronous = _sqlite_synchronous(parsed)
    parsed = parsed.difference_update_query([SYNCHRONOUS])
    memory = parsed.database in (None, "", ":memory:")
    options: dict[str, Any] = {}
    if memory:
        # One connection shared by every thread: brama_sql's Store serialises its use.
        options = {"poolclass": StaticPool, "connect_args": {"check_same_thread": False}}
    engine = create_engine(parsed, json_deserializer=load_json, **options)
    busy = MIGRATION_WAIT_S if migrating else lock_timeout
    _take_over_sqlite_transactions(
        engine, wal=not memory, busy_ms=milliseconds(busy), synchronous=synchronous
    )
    return engine


def build_async(
    url: str | URL,
    lock_timeout: float,
    *,
    io_timeout: float = IO_TIMEOUT_S,
    migrating: bool = False,
) -> AsyncEngine:
    """Create an asyncio engine for ``url`` (``sqlite+aiosqlite``, ``postgresql+psycopg``,
    ``mysql+aiomysql``: the tested ones) with the session settings :func:`build` makes,
    made by listeners on its ``sync_engine`` when a connection is opened.

    What differs from :func:`build`: the asyncio MySQL drivers have no read and write timeouts
    (only the watchdog bounds a call there, see :mod:`brama_sql.watchdog`), and an in-memory
    SQLite database is refused (one connection shared by every task would interleave their
    transactions): use a file.
    """
    from sqlalchemy.ext.asyncio import create_async_engine  # needs greenlet: the async extra

    parsed = make_url(url)
    backend = parsed.get_backend_name()
    connect = max(1, math.ceil(io_timeout))
    if backend in ("postgresql", "mysql") and migrating:
        arguments = _unless_in(parsed, {}, connect_timeout=max(connect, 5))
        return create_async_engine(parsed, connect_args=arguments, json_deserializer=load_json)
    if backend == "postgresql":
        arguments = _postgresql_arguments(parsed, lock_timeout, connect)
        return create_async_engine(parsed, connect_args=arguments, json_deserializer=load_json)
    if backend == "mysql":
        arguments = _unless_in(
            parsed,
            {},
            init_command=f"SET SESSION innodb_lock_wait_timeout = {whole_seconds(lock_timeout)}",
            connect_timeout=io_timeout,
            charset="utf8mb4",
        )
        engine = create_async_engine(
            parsed,
            isolation_level="READ COMMITTED",
            connect_args=arguments,
            json_deserializer=load_json,
        )
        _prepare_mysql_sessions(engine.sync_engine, lock_timeout, io_timeout)
        return engine
    if backend != "sqlite":
        return create_async_engine(parsed, pool_pre_ping=True, json_deserializer=load_json)
    synchronous = _sqlite_synchronous(parsed)
    parsed = parsed.difference_update_query([SYNCHRONOUS])
    if parsed.database in (None, "", ":memory:") or "mode=memory" in str(parsed):
        raise InvalidArgumentError(
            "AsyncBrama needs an SQLite database file (sqlite+aiosqlite:///path.db), not an "
            "in-memory database: its one connection would be shared by every task",
            argument="url",
        )
    engine = create_async_engine(parsed, json_deserializer=load_json)
    busy = MIGRATION_WAIT_S if migrating else lock_timeout
    _take_over_sqlite_transactions(
        engine.sync_engine, wal=True, busy_ms=milliseconds(busy), synchronous=synchronous
    )
    return engine


def milliseconds(seconds: float) -> int:
    """A lock wait limit in whole milliseconds, at least one."""
    return max(1, round(seconds * 1000))


def whole_seconds(seconds: float) -> int:
    """A lock wait limit in whole seconds, rounded up, at least one (MySQL's unit)."""
    return max(1, math.ceil(seconds))


def orphan_lock_limit(lock_timeout: float) -> float:
    """How long (seconds) a server lets a brama_sql write transaction sit idle before it ends
    it and releases its row lock: half the lock wait limit, at least 0.2 s (MariaDB counts
    whole seconds: at least one). brama_sql's own transactions never pause between statements,
    so only a client that froze, was cut off or died while holding a lock reaches it; its
    waiters, who wait up to ``lock_timeout``, then get the lock in time. A transaction of ours
    stalled that long (a starved CPU) is ended before its commit, and run again."""
    return max(0.2, lock_timeout / 2)


def connect_allowance(url: URL, io_timeout: float) -> float:
    """How long making a connection may take on an engine brama_sql builds for ``url``: the
    ``io_timeout``, except on PostgreSQL, whose client counts whole seconds and reads 1 as 2."""
    if url.get_backend_name() == "postgresql":
        return float(max(2, math.ceil(io_timeout)))
    return io_timeout


def _postgresql_arguments(url: URL, lock_timeout: float, connect_timeout: int) -> dict[str, Any]:
    settings = (
        f"-c lock_timeout={milliseconds(lock_timeout)} "
        f"-c idle_in_transaction_session_timeout={milliseconds(orphan_lock_limit(lock_timeout))} "
        "-c tcp_keepalives_idle=10 -c tcp_keepalives_interval=5 -c tcp_keepalives_count=3"
    )
    given = url.query.get("options")
    # JIT compilation is off unless the URL's options turn it on: it starts above an estimated
    # cost that connections() over a thousand rows reaches, where it took longer than the read.
    # The session's time zone is UTC unless they name one: psycopg then reads every time as
    # UTC already, where another zone costs a conversion per value (brama_sql's SQL depends
    # on no session time zone).
    defaults = "-c jit=off -c TimeZone=UTC"
    settings = f"{defaults} {settings}" if not given else f"{defaults} {given} {settings}"
    arguments: dict[str, Any] = {"options": settings}
    return _unless_in(
        url,
        arguments,
        connect_timeout=max(2, connect_timeout),  # libpq reads 1 as 2
        keepalives=1,
        keepalives_idle=max(1, TCP_USER_TIMEOUT_S // 3),
        keepalives_interval=5,
        keepalives_count=3,
        tcp_user_timeout=TCP_USER_TIMEOUT_S * 1000,
    )


def _mysql_arguments(url: URL, lock_timeout: float, io_timeout: float) -> dict[str, Any]:
    # The read timeout bounds the handshake, before the watchdog can see the connection;
    # _prepare_mysql_sessions lengthens it once connected, so that lock waits are not cut.
    return _unless_in(
        url,
        {},
        init_command=f"SET SESSION innodb_lock_wait_timeout = {whole_seconds(lock_timeout)}",
        connect_timeout=io_timeout,
        read_timeout=io_timeout,
        write_timeout=io_timeout,
        charset="utf8mb4",  # any text, whatever the server's default character set
    )


def _prepare_mysql_sessions(engine: Engine, lock_timeout: float, io_timeout: float) -> None:
    """Once a MySQL/MariaDB connection is made: its read and write timeouts become a backstop
    behind the watchdog, the whole call's bound plus a second (the URL's own win), and on
    MariaDB a session whose transaction sits idle past the orphan lock limit is ended
    (``idle_transaction_timeout``, whole seconds). MySQL 8 has no such setting: there only
    TCP keepalives and ``wait_timeout`` end a vanished client's session (see the docs)."""
    backstop = whole_seconds(lock_timeout + io_timeout) + 1
    idle = whole_seconds(orphan_lock_limit(lock_timeout))
    given = engine.url.query

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        # An asyncio driver's connection is wrapped in SQLAlchemy's adapter.
        driver = getattr(dbapi_connection, "driver_connection", dbapi_connection)
        if "mariadb" in str(driver.get_server_info()).lower():
            # Still under the connect-time read timeout (and the call's watchdog).
            cursor = dbapi_connection.cursor()
            cursor.execute(f"SET SESSION idle_transaction_timeout = {idle}")
            cursor.close()
        # PyMySQL reads these before every read and write.
        if "read_timeout" not in given and hasattr(dbapi_connection, "_read_timeout"):
            dbapi_connection._read_timeout = backstop
        if "write_timeout" not in given and hasattr(dbapi_connection, "_write_timeout"):
            dbapi_connection._write_timeout = backstop


ENDED = "brama_sql_ended"
"""Key in a pooled MySQL/MariaDB connection's ``info``: its last statement was the COMMIT or
ROLLBACK that ended a write transaction of brama_sql's (see :func:`_roll_back_unless_ended`)."""


def _roll_back_unless_ended(engine: Engine) -> None:
    """On MySQL/MariaDB, roll a connection back as it goes back to the pool (SQLAlchemy's
    reset) unless brama_sql's own write just ended its transaction on it (committed it, or
    rolled it back after the body's own error): the driver sends every ``ROLLBACK`` to the
    server, a round trip per call that ended nothing. Every other connection is rolled back as
    SQLAlchemy would (a read, a write whose statement or rollback failed, a host's use), and so
    is one whose server still reports a transaction open (PyMySQL keeps the flag of the
    server's last reply)."""

    @event.listens_for(engine, "reset")
    def _reset(dbapi_connection: Any, record: Any, state: Any) -> None:
        ended = record.info.pop(ENDED, False)
        if state.transaction_was_reset or not state.asyncio_safe:
            return  # as SQLAlchemy's own reset: the Connection already rolled back
        status = getattr(dbapi_connection, "server_status", None)
        if ended and (status is None or not status & _SERVER_STATUS_IN_TRANS):
            return
        dbapi_connection.rollback()


_SERVER_STATUS_IN_TRANS = 1
"""MySQL's ``SERVER_STATUS_IN_TRANS`` flag of a reply's status."""


def _unless_in(url: URL, arguments: dict[str, Any], **defaults: Any) -> dict[str, Any]:
    """``arguments`` plus each default that the URL's query does not set itself (the URL's
    own value wins: SQLAlchemy would let ``connect_args`` override it). A URL that sets
    MySQL's ``init_command`` must set ``innodb_lock_wait_timeout`` itself if it wants one."""
    for name, value in defaults.items():
        if name not in url.query:
            arguments[name] = value
    return arguments


def _sqlite_synchronous(url: URL) -> str:
    """The SQLite URL's ``synchronous`` parameter (``full`` unless it says ``normal``), which
    brama_sql takes out of the URL before the driver sees it."""
    given = url.query.get(SYNCHRONOUS, SYNCHRONOUS_MODES[0])
    value = given if isinstance(given, str) else given[-1]
    if value.lower() not in SYNCHRONOUS_MODES:
        raise InvalidArgumentError(
            f"the SQLite URL parameter {SYNCHRONOUS} must be "
            f"{' or '.join(map(repr, SYNCHRONOUS_MODES))}, not {value!r}",
            argument="url",
        )
    return value.lower()


def _take_over_sqlite_transactions(
    engine: Engine, wal: bool, busy_ms: int, synchronous: str = "full"
) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        # Stop pysqlite from beginning transactions lazily; brama_sql emits BEGIN itself.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {busy_ms}")
        in_wal = wal and _use_wal(cursor)
        # FULL: a commit is on disk before it returns, also across an OS crash or power loss.
        # NORMAL (opted into) is safe only in WAL mode: a power loss may then lose the last
        # commits, never corrupt the file; in a rollback journal it could corrupt it.
        durable = synchronous == "full" or not in_wal
        cursor.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        # A read runs without BEGIN: each of its statements then reads one snapshot of its
        # own (as PostgreSQL's reads in AUTOCOMMIT do), which is all any read here needs, and
        # the round trips of BEGIN and COMMIT are saved.
        if connection.get_execution_options().get("brama_sql_write", False):
            prepared.execute(connection, BEGIN_IMMEDIATE)


BEGIN_IMMEDIATE = prepared.Prepared(text("BEGIN IMMEDIATE"))
"""SQLite's ``SELECT ... FOR UPDATE``: the database's write lock, taken as a write begins."""


def sqlite_in_transaction(dbapi_connection: Any) -> bool:
    """Whether an SQLite driver connection (sqlite3's, or aiosqlite's behind SQLAlchemy's
    adapter) is inside a transaction."""
    driver = getattr(dbapi_connection, "driver_connection", dbapi_connection)
    return bool(driver.in_transaction)


def _use_wal(cursor: Any) -> bool:
    """Switch the database file to WAL journaling, once: the mode is stored in the file.

    Switching needs the database to itself, so when several processes open a new file at once
    all but one may be refused; they go on in the old mode (still correct, only slower) until
    their next connection, which finds the file in WAL already. Returns whether it is in WAL.
    """
    # execute() and fetchone() apart: the cursor of SQLAlchemy's aiosqlite adapter returns
    # no cursor from execute().
    cursor.execute("PRAGMA journal_mode")
    if cursor.fetchone()[0] == "wal":
        return True
    try:
        cursor.execute("PRAGMA journal_mode = WAL")
        return bool(cursor.fetchone()[0] == "wal")
    except sqlite3.OperationalError:
        logger.debug("another connection holds the SQLite database; WAL is switched on later")
        return False
