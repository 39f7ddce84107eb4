"""Engines: the ones brama_sql creates from a URL, and what each dialect needs to lock rows."""

from __future__ import annotations

import logging
import math
import sqlite3
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.pool import StaticPool

from brama_sql.errors import InvalidArgumentError

logger = logging.getLogger("brama_sql")

DEFAULT_URL = "sqlite:///brama.db"
WRITE = {"brama_sql_write": True}
"""Execution options of a connection that will write: on SQLite it begins ``IMMEDIATE``."""
CONNECT_TIMEOUT_S = 5
"""How long a new server connection may take before the attempt fails."""
IO_TIMEOUT_S = 30
"""How long a server may stay silent on a connection brama_sql created before the call fails:
MySQL/MariaDB's read and write timeouts, PostgreSQL's ``tcp_user_timeout`` (unacknowledged data)
with TCP keepalives. Every brama_sql statement is short; only a migration may take longer."""


MIGRATION_WAIT_S = 120
"""How long a migration may wait for SQLite's write lock (another process migrating)."""
SYNCHRONOUS = "synchronous"
"""The query parameter of an SQLite URL that chooses how durable a commit is:
``?synchronous=full`` (the default) or ``?synchronous=normal`` (see :func:`build`)."""
SYNCHRONOUS_MODES = ("full", "normal")


def build(url: str | URL, lock_timeout: float, *, migrating: bool = False) -> Engine:
    """Create an engine for ``url`` that brama_sql owns, with its session settings made once
    per pooled connection, when it connects.

    ``migrating`` builds the short-lived engine of :meth:`Brama.migrate`: no lock wait limit
    and no read timeout, since a migration may wait for another process's migration and
    its DDL may take long; only the connect timeout stays.

    - PostgreSQL: ``lock_timeout``, a connect timeout, TCP keepalives and a user timeout.
    - MySQL/MariaDB: ``innodb_lock_wait_timeout`` (whole seconds), READ COMMITTED (a locking
      read and the plain reads after it then see the same, latest rows, and no gap locks),
      connect, read and write timeouts.
    - SQLite: WAL journaling, ``synchronous=FULL`` (every commit on disk before it returns;
      the URL's ``?synchronous=normal`` opts into NORMAL, which a power loss or OS crash may
      cost the last commits), the busy timeout, and transactions that brama_sql begins itself:
      ``BEGIN IMMEDIATE`` for a write (the database's write lock is taken before the row is
      read: SQLite's ``SELECT ... FOR UPDATE``) and a plain ``BEGIN`` for a read.

    Server engines check pooled connections before use, so a database that comes back is used
    again without a restart.
    """
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend in ("postgresql", "mysql") and migrating:
        arguments = _unless_in(parsed, {}, connect_timeout=CONNECT_TIMEOUT_S)
        return create_engine(parsed, connect_args=arguments)
    if backend == "postgresql":
        return create_engine(
            parsed, pool_pre_ping=True, connect_args=_postgresql_arguments(parsed, lock_timeout)
        )
    if backend == "mysql":
        return create_engine(
            parsed,
            pool_pre_ping=True,
            isolation_level="READ COMMITTED",
            connect_args=_mysql_arguments(parsed, lock_timeout),
        )
    if backend != "sqlite":
        return create_engine(parsed, pool_pre_ping=True)
    synchronous = _sqlite_synchronous(parsed)
    parsed = parsed.difference_update_query([SYNCHRONOUS])
    memory = parsed.database in (None, "", ":memory:")
    options: dict[str, Any] = {}
    if memory:
        # One connection shared by every thread: brama_sql's Store serialises its use.
        options = {"poolclass": StaticPool, "connect_args": {"check_same_thread": False}}
    engine = create_engine(parsed, **options)
    busy = MIGRATION_WAIT_S if migrating else lock_timeout
    _take_over_sqlite_transactions(
        engine, wal=not memory, busy_ms=milliseconds(busy), synchronous=synchronous
    )
    return engine


def milliseconds(seconds: float) -> int:
    """A lock wait limit in whole milliseconds, at least one."""
    return max(1, round(seconds * 1000))


def whole_seconds(seconds: float) -> int:
    """A lock wait limit in whole seconds, rounded up, at least one (MySQL's unit)."""
    return max(1, math.ceil(seconds))


def _postgresql_arguments(url: URL, lock_timeout: float) -> dict[str, Any]:
    setting = f"-c lock_timeout={milliseconds(lock_timeout)}"
    given = url.query.get("options")
    arguments: dict[str, Any] = {"options": setting if not given else f"{given} {setting}"}
    return _unless_in(
        url,
        arguments,
        connect_timeout=CONNECT_TIMEOUT_S,
        keepalives=1,
        keepalives_idle=max(1, IO_TIMEOUT_S // 3),
        keepalives_interval=5,
        keepalives_count=3,
        tcp_user_timeout=IO_TIMEOUT_S * 1000,
    )


def _mysql_arguments(url: URL, lock_timeout: float) -> dict[str, Any]:
    # A read may last as long as a permitted lock wait: never cut one short.
    read_timeout = max(IO_TIMEOUT_S, whole_seconds(lock_timeout) + 1)
    return _unless_in(
        url,
        {},
        init_command=f"SET SESSION innodb_lock_wait_timeout = {whole_seconds(lock_timeout)}",
        connect_timeout=CONNECT_TIMEOUT_S,
        read_timeout=read_timeout,
        write_timeout=IO_TIMEOUT_S,
        charset="utf8mb4",  # any text, whatever the server's default character set
    )


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
        writes = connection.get_execution_options().get("brama_sql_write", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if writes else "BEGIN")


def _use_wal(cursor: Any) -> bool:
    """Switch the database file to WAL journaling, once: the mode is stored in the file.

    Switching needs the database to itself, so when several processes open a new file at once
    all but one may be refused; they go on in the old mode (still correct, only slower) until
    their next connection, which finds the file in WAL already. Returns whether it is in WAL.
    """
    if cursor.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
        return True
    try:
        return bool(cursor.execute("PRAGMA journal_mode = WAL").fetchone()[0] == "wal")
    except sqlite3.OperationalError:
        logger.debug("another connection holds the SQLite database; WAL is switched on later")
        return False
