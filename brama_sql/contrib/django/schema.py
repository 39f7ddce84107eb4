"""brama_sql's tables in a Django database: the Alembic revisions run on Django's connection.

The shipped Django migration ``0001_initial`` upgrades to the newest Alembic revision
(:func:`upgrade`) and, reversed (``migrate brama_sql zero``), drops the tables
(:func:`drop`). Later brama_sql releases add Alembic revisions, not Django migrations: each
``manage.py migrate`` upgrades the tables to the head when they are behind
(:func:`upgrade_after_migrate`), and the system check ``brama_sql.W001`` says so until then.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.db import connections
from django.db.migrations.recorder import MigrationRecorder
from sqlalchemy.engine import Connection

from brama_sql import migration
from brama_sql.contrib.django.database import shared_engine
from brama_sql.contrib.django.runtime import read_config, reset_brama
from brama_sql.errors import SchemaError

APP_LABEL = "brama_sql"
INITIAL = "0001_initial"


@contextmanager
def django_connection(alias: str) -> Iterator[Connection]:
    """An SQLAlchemy connection over the calling thread's Django connection ``alias``."""
    engine = shared_engine(alias)
    try:
        with engine.connect() as connection:
            yield connection
    finally:
        engine.dispose()


def upgrade(alias: str) -> None:
    """Upgrade brama_sql's tables in database ``alias`` to the newest revision (idempotent;
    serialised with other processes' migrations by brama_sql's migration lock)."""
    with django_connection(alias) as connection:
        migration.upgrade(connection)
    reset_brama()  # the instance checks the schema once: let it look again


def drop(alias: str) -> None:
    """Drop brama_sql's tables and its version table from database ``alias``."""
    with django_connection(alias) as connection:
        migration.downgrade(connection, "base")
        if connection.in_transaction():
            connection.commit()  # MySQL: what released the migration lock
        with connection.begin():
            connection.exec_driver_sql(f"DROP TABLE IF EXISTS {migration.VERSION_TABLE}")
    reset_brama()


def problem(alias: str) -> str | None:
    """What keeps brama_sql from using its tables in ``alias`` (behind, missing), or ``None``."""
    with django_connection(alias) as connection:
        try:
            migration.check(connection)
        except SchemaError as error:
            return str(error)
        finally:
            if connection.in_transaction():
                connection.rollback()
    return None


def initial_applied(alias: str) -> bool:
    """Whether Django recorded brama_sql's migration as applied in ``alias``."""
    recorder = MigrationRecorder(connections[alias])
    return (APP_LABEL, INITIAL) in recorder.applied_migrations()


def upgrade_after_migrate(using: str = "default", **_kwargs: Any) -> None:
    """``post_migrate``: bring the tables to the newest revision in brama_sql's database once
    its Django migration is applied there (how new Alembic revisions reach a Django project)."""
    if using != read_config().database or not initial_applied(using):
        return
    if problem(using) is not None:
        upgrade(using)
