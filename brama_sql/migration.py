"""The schema, upgraded through the Alembic scripts shipped with the package.

The Alembic configuration is built in code: the scripts are found next to the installed package
(or in the checkout), the revision is recorded in ``brama_alembic_version`` so that a host
application's own Alembic history is left alone, and concurrent upgrades are serialised with a
database lock. :func:`include_object` keeps a host application's own Alembic autogenerate away
from brama_sql's tables when both share a database.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from brama_sql.engine import WRITE
from brama_sql.errors import SchemaError
from brama_sql.schema import TABLE_PREFIX, metadata

VERSION_TABLE = "brama_alembic_version"
LOCK_NAME = "brama_sql_migrate"
PG_LOCK_KEY = 0x6272616D61  # "brama"
MYSQL_LOCK_TIMEOUT_S = 60

IncludeObject = Callable[[Any, str | None, str, bool, Any], bool]
"""The signature of Alembic's ``include_object`` hook: ``(obj, name, type_, reflected,
compare_to) -> bool``."""


def script_location() -> Path:
    """The folder of the Alembic scripts: inside an installed wheel, else the checkout's."""
    package = Path(__file__).resolve().parent
    for candidate in (package / "migrations", package.parent / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise SchemaError(f"brama_sql's migration scripts are missing (looked beside {package})")


def config(connection: Connection | None = None) -> Config:
    """An Alembic ``Config`` for brama_sql's scripts, optionally bound to ``connection``."""
    cfg = Config()
    cfg.set_main_option("script_location", str(script_location()))
    cfg.attributes["connection"] = connection
    return cfg


@functools.lru_cache(maxsize=1)
def head() -> str:
    """The newest revision of the shipped scripts."""
    revision = ScriptDirectory.from_config(config()).get_current_head()
    if revision is None:  # pragma: no cover - the package always ships a revision
        raise SchemaError("brama_sql ships no migration scripts")
    return revision


def current(connection: Connection) -> str | None:
    """The revision the database is at, or ``None`` when brama_sql was never migrated there."""
    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    return context.get_current_revision()


def upgrade(engine_or_connection: Engine | Connection, revision: str = "head") -> None:
    """Upgrade brama_sql's tables to ``revision``; safe to run from several processes at once.

    Given an engine, the upgrade runs in a transaction of its own and commits. Given a connection,
    it runs on it and commits only a transaction it began itself: the caller's stays the caller's.
    """

    def step(cfg: Config) -> None:
        found = current(cfg.attributes["connection"])
        if found is not None and found not in known():
            # A newer brama_sql migrated this database (a rolling deploy): nothing to do here.
            return
        command.upgrade(cfg, revision)

    _run(engine_or_connection, step)


def downgrade(engine_or_connection: Engine | Connection, revision: str = "base") -> None:
    """Downgrade brama_sql's tables to ``revision`` (``"base"`` drops them)."""
    _run(engine_or_connection, lambda cfg: command.downgrade(cfg, revision))


@functools.lru_cache(maxsize=1)
def known() -> frozenset[str]:
    """Every revision the shipped scripts know."""
    return frozenset(
        script.revision for script in ScriptDirectory.from_config(config()).walk_revisions()
    )


def check(connection: Connection) -> None:
    """Raise :class:`SchemaError` unless the database is at the shipped head revision, or at
    a revision these scripts do not know: a newer brama_sql migrated it during a rolling
    deploy (its migrations keep the schema usable by the release before)."""
    found = current(connection)
    if found == head() or (found is not None and found not in known()):
        return
    if found is None:
        problem = "brama_sql's tables do not exist in this database"
    else:
        problem = f"brama_sql's schema is at revision {found}, not {head()}"
    raise SchemaError(f"{problem}: run Brama.migrate() or `brama-sql migrate`")


def include_object(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """Alembic's ``include_object`` hook for a host application's own migrations: ``False`` for
    brama_sql's tables, their columns, indexes and constraints, and its version table
    ``brama_alembic_version``; ``True`` for everything else.

    Pass it to ``context.configure(include_object=include_object)`` in the host's ``env.py`` so
    that its autogenerate neither drops nor alters what :func:`upgrade` made. brama_sql's tables
    are the tables of :data:`brama_sql.schema.metadata` plus :data:`VERSION_TABLE`, matched by
    name in any schema; a host table that merely starts with ``brama_`` stays included. To apply
    a filter of the host's own as well, see :func:`include_object_and`.
    """
    return _table_name(obj, name, type_) not in _brama_tables()


def include_object_and(*filters: IncludeObject) -> IncludeObject:
    """:func:`include_object` combined with the host's own ``filters``: an object is included only
    when every one of them includes it (brama_sql's objects never reach them)."""

    def combined(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
        return all(
            include(obj, name, type_, reflected, compare_to)
            for include in (include_object, *filters)
        )

    return combined


def _include_only_brama(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """The opposite filter, for brama_sql's own ``env.py``: look only at tables named ``brama_*``
    (so a table dropped from the models is still seen) other than the version table; the host
    application's tables are none of our business."""
    table = _table_name(obj, name, type_)
    if table is None:
        return True
    return table.startswith(TABLE_PREFIX) and table != VERSION_TABLE


def _brama_tables() -> frozenset[str]:
    """The names of brama_sql's tables, read from the models at each call."""
    return frozenset({*(table.name for table in metadata.tables.values()), VERSION_TABLE})


def _table_name(obj: Any, name: str | None, type_: str) -> str | None:
    """The name of the table an object of Alembic's autogenerate is, or belongs to."""
    if type_ == "table":
        return name
    table = getattr(obj, "table", None)
    table_name = getattr(table, "name", None)
    return table_name if isinstance(table_name, str) else None


def _run(target: Engine | Connection, step: Callable[[Config], None]) -> None:
    if isinstance(target, Connection):
        owns = not target.in_transaction()
        with _serialised(target):
            step(config(target))
            if owns and target.in_transaction():
                target.commit()
        return
    with target.connect().execution_options(**WRITE) as connection, _serialised(connection):
        step(config(connection))
        if connection.in_transaction():
            connection.commit()


@contextmanager
def _serialised(connection: Connection) -> Iterator[None]:
    """Hold a database-wide lock named for brama_sql while the scripts run."""
    dialect = connection.dialect.name
    if dialect == "postgresql":
        # Released when the transaction that runs the (transactional) DDL ends.
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_LOCK_KEY})
        yield
    elif dialect == "mysql":
        # A session lock: MySQL's DDL commits implicitly, so a transaction cannot hold it.
        got = connection.execute(
            text("SELECT GET_LOCK(:name, :timeout)"),
            {"name": LOCK_NAME, "timeout": MYSQL_LOCK_TIMEOUT_S},
        ).scalar()
        if got != 1:
            raise SchemaError("timed out waiting for another process's brama_sql migration")
        try:
            yield
        finally:
            connection.execute(text("SELECT RELEASE_LOCK(:name)"), {"name": LOCK_NAME})
    else:
        # SQLite: take the database's write lock before Alembic reads the version table. On
        # engines brama_sql creates, the first statement begins IMMEDIATE; a host's engine
        # whose driver begins lazily gets BEGIN IMMEDIATE here.
        connection.exec_driver_sql("SELECT 1")
        driver = connection.connection.dbapi_connection
        if driver is not None and not driver.in_transaction:
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        yield
