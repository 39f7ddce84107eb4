"""The SQLAlchemy engine a Django project's Brama uses, made from a ``DATABASES`` entry.

Two ways, chosen by :func:`build_engine`:

- **own** (the default outside tests): an engine brama_sql builds from a URL converted from the
  ``DATABASES`` entry (:func:`database_url`). brama_sql then commits its reports on connections
  of its own, whatever the request's transaction does: a failure report is not rolled back
  with a view that raised, and no row lock waits for the end of the request.
- **shared** (under Django's test runner, and always for an in-memory SQLite database): an
  engine whose connections are the calling thread's Django connection (:class:`SharedConnection`),
  and whose transactions are Django ``atomic`` blocks: a savepoint inside a ``TestCase``'s
  transaction, so that what a test wrote into brama_sql's tables is rolled back with it, on
  the test database, with no second connection to lock SQLite's tables or to keep the test
  database from being dropped. The pool keeps nothing (``NullPool``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from typing import Any

from django.db import connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.pool import NullPool

from brama_sql.errors import InvalidArgumentError

VENDOR_BACKENDS = {"sqlite": "sqlite", "postgresql": "postgresql", "mysql": "mysql"}
"""Django's ``connection.vendor`` and SQLAlchemy's backend name, for the supported vendors."""
PASSED_OPTIONS = {
    "postgresql": ("sslmode", "sslrootcert", "sslcert", "sslkey", "application_name"),
    "mysql": ("charset", "ssl_ca", "ssl_cert", "ssl_key", "unix_socket"),
}
"""The ``DATABASES[...]["OPTIONS"]`` that are passed on to brama_sql's own engine's URL."""


def in_memory(wrapper: BaseDatabaseWrapper) -> bool:
    """Whether the Django connection is to an in-memory SQLite database (the test runner's
    default for SQLite): only Django's own connection can reach it."""
    if wrapper.vendor != "sqlite":
        return False
    return bool(wrapper.is_in_memory_db())


def database_url(wrapper: BaseDatabaseWrapper) -> URL:
    """A URL for brama_sql's own engine on the database of a Django connection, from its
    current settings (the test runner's database once it made one)."""
    settings = wrapper.settings_dict
    vendor = wrapper.vendor
    if vendor not in VENDOR_BACKENDS:
        raise InvalidArgumentError(
            f"Django database {wrapper.alias!r} is {vendor}: brama_sql supports SQLite, "
            "PostgreSQL and MySQL/MariaDB",
            argument="DATABASE",
        )
    if vendor == "sqlite":
        return URL.create("sqlite", database=str(settings["NAME"]))
    given = settings.get("OPTIONS") or {}
    query = {name: str(given[name]) for name in PASSED_OPTIONS.get(vendor, ()) if name in given}
    if vendor == "mysql":
        query.setdefault("charset", "utf8mb4")
    port = settings.get("PORT")
    return URL.create(
        "postgresql+psycopg" if vendor == "postgresql" else f"mysql+{_mysql_driver()}",
        username=settings.get("USER") or None,
        password=settings.get("PASSWORD") or None,
        host=settings.get("HOST") or None,
        port=int(port) if port else None,
        database=settings.get("NAME") or None,
        query=query,
    )


def _mysql_driver() -> str:
    """PyMySQL when it is installed, else mysqlclient (``MySQLdb``)."""
    try:
        import pymysql  # noqa: F401
    except ImportError:  # pragma: no cover - depends on the environment
        return "mysqldb"
    return "pymysql"


def shared_engine(alias: str) -> Engine:
    """An engine whose every connection is the calling thread's Django connection ``alias``,
    and whose transactions are Django ``atomic`` blocks on it (see the module)."""
    wrapper = connections[alias]
    vendor = wrapper.vendor
    if vendor not in VENDOR_BACKENDS:
        raise InvalidArgumentError(
            f"Django database {alias!r} is {vendor}: brama_sql supports SQLite, PostgreSQL "
            "and MySQL/MariaDB",
            argument="DATABASE",
        )
    wrapper.ensure_connection()
    if vendor == "mysql":
        module = type(wrapper.connection).__module__
        name = "mysql+pymysql" if module.startswith("pymysql") else "mysql+mysqldb"
    else:
        name = {"sqlite": "sqlite", "postgresql": "postgresql+psycopg"}[vendor]

    def creator() -> SharedConnection:
        current = connections[alias]
        current.ensure_connection()
        return SharedConnection(current)

    arguments: dict[str, Any] = {"use_native_hstore": False} if vendor == "postgresql" else {}
    engine = create_engine(URL.create(name), creator=creator, poolclass=NullPool, **arguments)
    _leave_isolation_to_django(engine)

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        shared = connection.connection.dbapi_connection
        if isinstance(shared, SharedConnection):
            shared.begin()

    return engine


def _leave_isolation_to_django(engine: Engine) -> None:
    """Keep SQLAlchemy from changing the isolation level or the autocommit mode of Django's
    connection: Django owns them (READ COMMITTED on PostgreSQL and MySQL by default)."""
    dialect: Any = engine.dialect
    dialect.set_isolation_level = lambda _dbapi_connection, _level: None
    dialect.reset_isolation_level = lambda _dbapi_connection: None
    dialect.get_isolation_level = lambda _dbapi_connection: "READ COMMITTED"


class SharedConnection:
    """A DB-API connection that is a Django connection's, lent to SQLAlchemy for one use.

    ``begin()`` (called when SQLAlchemy begins) enters ``transaction.atomic`` on the Django
    connection (a transaction, or a savepoint inside Django's own); ``commit()`` and
    ``rollback()`` leave it; ``close()`` leaves the Django connection open. Other attributes
    are the driver connection's. Cursors read brama_sql's values as SQLAlchemy expects them
    whatever Django registered on the connection (JSON and time stamps on PostgreSQL, SQLite's
    declared-type converters).
    """

    def __init__(self, wrapper: BaseDatabaseWrapper) -> None:
        self._wrapper = wrapper
        self._driver = wrapper.connection
        self._atomic: Any = None
        self._nested = False

    def begin(self) -> None:
        """Enter a Django atomic block (the SQLAlchemy transaction that just began)."""
        if self._atomic is None:
            self._nested = bool(self._wrapper.in_atomic_block)
            atomic = transaction.atomic(using=self._wrapper.alias)
            atomic.__enter__()
            self._atomic = atomic

    def commit(self) -> None:
        """Leave the atomic block, keeping its writes."""
        atomic, self._atomic = self._atomic, None
        if atomic is None:
            return
        if self._nested and self._wrapper.vendor == "postgresql":
            # brama_sql's write set its lock limits with SET LOCAL, which would outlive the
            # released savepoint in the enclosing transaction (a test's): the idle limit
            # would then end a test that pauses between two statements.
            with self._driver.cursor() as cursor:
                cursor.execute(
                    "SET LOCAL lock_timeout TO DEFAULT; "
                    "SET LOCAL idle_in_transaction_session_timeout TO DEFAULT"
                )
        atomic.__exit__(None, None, None)

    def rollback(self) -> None:
        """Leave the atomic block, undoing its writes (nothing to do outside one)."""
        atomic, self._atomic = self._atomic, None
        if atomic is not None:
            error = _RolledBack()
            atomic.__exit__(type(error), error, None)

    def close(self) -> None:
        """Give the connection back to Django: roll back what is still open, keep it open."""
        self.rollback()

    def cursor(self, *args: Any, **kwargs: Any) -> Any:
        """A driver cursor that reads values as SQLAlchemy expects them."""
        cursor = self._driver.cursor(*args, **kwargs)
        vendor = self._wrapper.vendor
        if vendor == "postgresql":
            _plain_postgresql_loaders(cursor)
        elif vendor == "sqlite":
            return _TextTimes(cursor)
        return cursor

    def __getattr__(self, name: str) -> Any:
        return getattr(self._driver, name)


class _RolledBack(Exception):
    """Tells Django's atomic block to roll back."""


def _plain_postgresql_loaders(cursor: Any) -> None:
    """psycopg's own loaders for JSON and ``timestamptz`` on this cursor only: Django loads
    ``jsonb`` as text and time stamps in its own time zone on its connections."""
    from psycopg.types.datetime import TimestamptzLoader
    from psycopg.types.json import JsonbLoader, JsonLoader

    cursor.adapters.register_loader("jsonb", JsonbLoader)
    cursor.adapters.register_loader("json", JsonLoader)
    cursor.adapters.register_loader("timestamptz", TimestamptzLoader)


def _as_text(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


class _TextTimes:
    """An SQLite cursor whose rows hold times as text, as SQLAlchemy reads them: Django's
    connection converts columns declared ``datetime`` to Python values."""

    def __init__(self, cursor: Any) -> None:
        self._cursor = cursor

    def _row(self, row: Sequence[Any] | None) -> tuple[Any, ...] | None:
        return None if row is None else tuple(_as_text(value) for value in row)

    def fetchone(self) -> tuple[Any, ...] | None:
        """The next row."""
        return self._row(self._cursor.fetchone())

    def fetchmany(self, *args: Any) -> list[tuple[Any, ...]]:
        """The next rows."""
        return [tuple(_as_text(value) for value in row) for row in self._cursor.fetchmany(*args)]

    def fetchall(self) -> list[tuple[Any, ...]]:
        """The remaining rows."""
        return [tuple(_as_text(value) for value in row) for row in self._cursor.fetchall()]

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        for row in self._cursor:
            yield tuple(_as_text(value) for value in row)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)
