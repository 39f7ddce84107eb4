"""Engines: the ones brama_sql creates from a URL, and what each dialect needs to lock rows."""

from __future__ import annotations

import logging
import sqlite3
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.pool import StaticPool

logger = logging.getLogger("brama_sql")

DEFAULT_URL = "sqlite:///brama.db"
WRITE = {"brama_sql_write": True}
"""Execution options of a connection that will write: on SQLite it begins ``IMMEDIATE``."""
CONNECT_TIMEOUT_S = 5
"""How long a new server connection may take before the attempt fails."""


def build(url: str | URL, lock_timeout: float) -> Engine:
    """Create an engine for ``url``; on SQLite, set it up for row-safe concurrent writers.

    SQLite gets WAL journaling, a busy timeout, and transactions that brama_sql begins itself:
    ``BEGIN IMMEDIATE`` for a write (the whole-database write lock is taken before the row is
    read, which is SQLite's equivalent of ``SELECT ... FOR UPDATE``) and a plain ``BEGIN`` for
    a read. ``lock_timeout`` (seconds) is SQLite's busy timeout. Server engines check pooled
    connections before use and give up connecting after a few seconds.
    """
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend != "sqlite":
        connect_args: dict[str, Any] = {}
        if backend in ("postgresql", "mysql") and "connect_timeout" not in parsed.query:
            connect_args["connect_timeout"] = CONNECT_TIMEOUT_S
        return create_engine(parsed, pool_pre_ping=True, connect_args=connect_args)
    memory = parsed.database in (None, "", ":memory:")
    options: dict[str, Any] = {}
    if memory:
        options = {"poolclass": StaticPool, "connect_args": {"check_same_thread": False}}
    engine = create_engine(parsed, **options)
    _take_over_sqlite_transactions(engine, wal=not memory, busy_ms=round(lock_timeout * 1000))
    return engine


def _take_over_sqlite_transactions(engine: Engine, wal: bool, busy_ms: int) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        # Stop pysqlite from beginning transactions lazily; brama_sql emits BEGIN itself.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {busy_ms}")
        if wal and _use_wal(cursor):
            # Durable across process crashes; a power loss may lose the last transactions.
            cursor.execute("PRAGMA synchronous = NORMAL")
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
