"""The schema, upgraded through the Alembic scripts shipped with the package.

The Alembic configuration is built in code: the scripts are found next to the installed package
(or in the checkout), the revision is recorded in ``brama_alembic_version`` so that a host
application's own Alembic history is left alone, and concurrent upgrades are serialised with a
database lock. :func:`include_object` keeps a host application's own Alembic autogenerate away
from brama_sql's tables when both share a database.

:func:`check` looks at the revision and at the tables themselves; :func:`upgrade` to the head
repairs what it safely can (a missing table at the head revision, an empty version table beside
tables that match the head) and refuses with a :class:`SchemaError` what it cannot.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, Engine

from brama_sql.engine import WRITE, sqlite_in_transaction
from brama_sql.errors import SchemaError
from brama_sql.schema import TABLE_PREFIX, metadata

VERSION_TABLE = "brama_alembic_version"
LOCK_NAME = "brama_sql_migrate"
PG_LOCK_KEY = 0x6272616D61  # "brama"
MYSQL_LOCK_TIMEOUT_S = 60
RUN_MIGRATE = "run Brama.migrate() or `brama-sql migrate`"

logger = logging.getLogger("brama_sql")

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

    To the head (the default), it first reads the revision and the tables without any lock and
    returns if they are usable as they are (at the head, or at a newer revision these scripts
    do not know); only then does it take the migration lock and look again under it. It also
    repairs: a table missing at the head revision is created again (empty), and an empty
    version table beside tables that match the head gets the head recorded. What it cannot
    repair raises :class:`SchemaError` saying what is wrong and what to do.
    """

    def needed(connection: Connection) -> bool:
        return revision != "head" or _problem(_look(connection)) is not None

    def step(cfg: Config) -> None:
        if revision == "head":
            _to_head(cfg)
            return
        found = current(cfg.attributes["connection"])
        if found is not None and found not in known():
            # A newer brama_sql migrated this database (a rolling deploy): nothing to do here.
            return
        command.upgrade(cfg, revision)

    _run(engine_or_connection, step, needed)


def stamp(engine_or_connection: Engine | Connection, revision: str) -> None:
    """Record ``revision`` in ``brama_alembic_version`` without running any script.

    For tables that are at ``revision`` but whose version row was lost (``migrate()`` refuses
    to guess which earlier revision they are at); :func:`upgrade` then takes them on from there.
    """
    _run(engine_or_connection, lambda cfg: command.stamp(cfg, revision))


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
    """Raise :class:`SchemaError` unless brama_sql's three tables exist and the database is at
    the shipped head revision, or at a revision these scripts do not know: a newer brama_sql
    migrated it during a rolling deploy (its migrations keep the schema usable by the release
    before). The message says what is wrong and what to run."""
    problem = _problem(_look(connection))
    if problem is not None:
        raise SchemaError(problem)


@dataclass(frozen=True)
class _Found:
    """What a look at the database found: the recorded revision and which tables exist."""

    revision: str | None
    present: frozenset[str]

    @property
    def missing(self) -> list[str]:
        """brama_sql's tables that the recorded revision has and that do not exist, in the
        order of the models (every table for a revision these scripts do not know)."""
        return [
            name
            for name in metadata.tables
            if name not in self.present and _has_table(self.revision, name)
        ]


INTRODUCED_AT = {"brama_rollups": "0004"}
"""The tables a later revision than the first created, and that revision."""


def _has_table(revision: str | None, table: str) -> bool:
    """Whether the schema at ``revision`` has ``table`` (a revision these scripts do not know
    is newer than theirs, so it has every table)."""
    introduced = INTRODUCED_AT.get(table)
    if introduced is None or revision is None or revision not in known():
        return True
    scripts = ScriptDirectory.from_config(config())
    return any(
        script is not None and script.revision == introduced
        for script in scripts.iterate_revisions(revision, "base")
    )


def _look(connection: Connection) -> _Found:
    """Read the recorded revision and which of brama_sql's tables exist (one query for the
    table names, one for the revision)."""
    names = set(inspect(connection).get_table_names())
    revision = current(connection) if VERSION_TABLE in names else None
    return _Found(revision, frozenset(names & set(metadata.tables)))


def _problem(found: _Found) -> str | None:
    """What keeps brama_sql from using the database and what to run, or ``None``."""
    revision, missing = found.revision, _missing(found.missing)
    if revision is None:
        if not found.present:
            return f"brama_sql's tables do not exist in this database: {RUN_MIGRATE}"
        return (
            f"brama_sql's version table {VERSION_TABLE} records no revision, but its tables "
            f"{_names(sorted(found.present))} exist: {RUN_MIGRATE}, which records the revision "
            "if they match it"
        )
    if revision == head():
        if not found.missing:
            return None
        return (
            f"brama_sql's {missing} although "
            f"{VERSION_TABLE} says revision {revision}: {RUN_MIGRATE} to create "
            f"{'it' if len(found.missing) == 1 else 'them'} again (empty)"
        )
    if revision not in known():
        if not found.missing:
            return None
        return (
            f"{VERSION_TABLE} says revision {revision}, which this brama_sql does not know (a "
            f"newer release migrated the database), and brama_sql's {missing}: run "
            f"`brama-sql migrate` of the release that wrote {revision}"
        )
    if found.missing:
        return (
            f"brama_sql's schema is at revision {revision}, not {head()}, and its {missing}, "
            "so it cannot be upgraded: restore "
            f"{'it' if len(found.missing) == 1 else 'them'} from a backup, or drop brama_sql's "
            f"other tables and {VERSION_TABLE} (their rows are lost) and {RUN_MIGRATE}"
        )
    return f"brama_sql's schema is at revision {revision}, not {head()}: {RUN_MIGRATE}"


def _to_head(cfg: Config) -> None:
    """Under the migration lock: upgrade to the head, repair, or refuse (see :func:`upgrade`)."""
    connection: Connection = cfg.attributes["connection"]
    found = _look(connection)
    if _problem(found) is None:
        return  # usable as it is (another process may have just migrated it)
    if found.revision is None and not found.present:
        command.upgrade(cfg, "head")
    elif found.revision is None:
        differences = _differences(connection, found.present)
        if differences:
            raise SchemaError(
                f"brama_sql's version table {VERSION_TABLE} records no revision, and its tables "
                f"differ from revision {head()} ({'; '.join(differences)}), so migrate() cannot "
                "tell which revision they are at: record it with "
                "brama_sql.migration.stamp(engine, REVISION) and run migrate() again, or drop "
                "brama_sql's tables (their rows are lost) and run migrate()"
            )
        _create(connection, found.missing)
        command.stamp(cfg, "head")
        logger.warning(
            "brama_sql's tables matched revision %s without a recorded revision: recorded it",
            head(),
        )
    elif found.revision == head():
        _create(connection, found.missing)
    elif found.revision in known() and not found.missing:
        command.upgrade(cfg, "head")
    else:  # behind with tables missing, or unknown with tables missing
        raise SchemaError(str(_problem(found)))


def _create(connection: Connection, names: list[str]) -> None:
    """Create brama_sql's tables ``names`` as the head revision has them (empty)."""
    for name in names:
        metadata.tables[name].create(connection)
    if names:
        logger.warning("brama_sql's %s: created again, empty", _missing(names))


def _differences(connection: Connection, present: frozenset[str]) -> list[str]:
    """How the existing tables ``present`` differ from the models of the head revision: in
    columns, types, indexes and constraints, and on MariaDB/MySQL in character sets."""
    context = MigrationContext.configure(
        connection,
        opts={
            "compare_type": True,
            "include_object": lambda obj, name, type_, _reflected, _compare_to: (
                _table_name(obj, name, type_) in present
            ),
        },
    )
    found = [_describe(difference) for difference in compare_metadata(context, metadata)]
    return found + _charset_differences(connection, present)


def _describe(difference: Any) -> str:
    """One of Alembic's autogenerate differences in a few words."""
    if isinstance(difference, list):  # modify_* operations come grouped by column
        difference = difference[0]
    operation: str = difference[0]
    if operation.startswith("modify_"):
        return f"{difference[2]}.{difference[3]}: {operation.removeprefix('modify_')} differs"
    kind = operation.split("_", 1)[-1]  # table, column, index, constraint, ...
    obj = difference[-1]
    name = getattr(obj, "name", None) or ""
    table = _table_name(obj, name, kind)
    what = "missing" if operation.startswith("add_") else "not expected"
    return f"{kind} {name if kind == 'table' else f'{table}.{name}'} {what}"


def _charset_differences(connection: Connection, present: frozenset[str]) -> list[str]:
    """On MariaDB/MySQL, the text columns of ``present`` that are not ``utf8mb4``."""
    if connection.dialect.name != "mysql" or not present:
        return []
    rows = connection.execute(
        text(
            "SELECT table_name, column_name, character_set_name "
            "FROM information_schema.columns WHERE table_schema = DATABASE() "
            "AND character_set_name IS NOT NULL AND character_set_name <> 'utf8mb4'"
        )
    ).all()
    return [
        f"{table}.{column}: character set {charset}, not utf8mb4"
        for table, column, charset in rows
        if table in present
    ]


def _names(names: list[str]) -> str:
    return ", ".join(names)


def _missing(names: list[str]) -> str:
    """``table x is missing`` or ``tables x, y are missing``."""
    if len(names) == 1:
        return f"table {names[0]} is missing"
    return f"tables {_names(names)} are missing"


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


def _run(
    target: Engine | Connection,
    step: Callable[[Config], None],
    needed: Callable[[Connection], bool] | None = None,
) -> None:
    """Run ``step`` under the migration lock; first, when ``needed`` is given, ask it on a
    plain read (no lock, no write transaction) whether there is anything to do at all."""
    if isinstance(target, Connection):
        owns = not target.in_transaction()
        if needed is not None:
            go = needed(target)
            if owns and target.in_transaction():
                target.commit()  # end the read; the lock is taken in a transaction of its own
            if not go:
                return
        with _serialised(target):
            step(config(target))
            if owns and target.in_transaction():
                target.commit()
        return
    with target.connect() as connection:
        if needed is not None:
            with connection.begin():  # on SQLite a plain BEGIN: it waits for no writer
                go = needed(connection)
            if not go:
                return
        connection.execution_options(**WRITE)
        with _serialised(connection):
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
        if driver is not None and not sqlite_in_transaction(driver):
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        yield
