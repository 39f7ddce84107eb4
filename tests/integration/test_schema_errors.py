"""A database brama_sql cannot use: never migrated (SchemaError that says to migrate), tables
that vanished, and a database that is not there at all (BramaDatabaseError naming the call)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import URL, make_url

from brama_sql import Brama, BramaDatabaseError, BramaError, SchemaError, State
from brama_sql.migration import VERSION_TABLE, current, downgrade

OPERATIONS: dict[str, Callable[[Brama], Any]] = {
    "register": lambda brama: brama.register("db"),
    "available": lambda brama: brama.available("db"),
    "success": lambda brama: brama.success("db"),
    "failure": lambda brama: brama.failure("db"),
    "status": lambda brama: brama.status("db"),
    "unregister": lambda brama: brama.unregister("db"),
    "open": lambda brama: brama.open("db"),
    "close": lambda brama: brama.close("db"),
    "reset": lambda brama: brama.reset("db"),
    "connections": lambda brama: brama.connections(),
    "events": lambda brama: brama.events(),
    "cleanup": lambda brama: brama.cleanup(),
}
"""Every operation that reads or writes brama_sql's tables."""


@pytest.fixture
def blank_brama(blank_url: URL) -> Iterator[Brama]:
    """A Brama on a database that was never migrated."""
    brama = Brama(blank_url.render_as_string(hide_password=False))
    yield brama
    brama.dispose()


def _table_names(url: URL) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


@pytest.mark.parametrize("operation", sorted(OPERATIONS))
def test_never_migrated_raises_schema_error(
    blank_brama: Brama, blank_url: URL, operation: str
) -> None:
    with pytest.raises(SchemaError, match="migrate") as caught:
        OPERATIONS[operation](blank_brama)
    assert isinstance(caught.value, BramaError)
    assert "brama-sql migrate" in str(caught.value) or "migrate()" in str(caught.value)
    assert not {"brama_connections", "brama_events"} & _table_names(blank_url)


def test_every_operation_keeps_raising_until_migrated(blank_brama: Brama) -> None:
    for operation in sorted(OPERATIONS):
        with pytest.raises(SchemaError, match="migrate"):
            OPERATIONS[operation](blank_brama)
    blank_brama.migrate()
    status = blank_brama.register("db", failure_threshold=1)
    assert status.state is State.UNKNOWN
    blank_brama.failure("db")
    assert blank_brama.available("db") is False


def test_migrate_is_idempotent(blank_brama: Brama, blank_url: URL) -> None:
    blank_brama.migrate()
    blank_brama.migrate()
    assert {"brama_connections", "brama_events", VERSION_TABLE} <= _table_names(blank_url)
    blank_brama.register("db", metadata={"kept": True})
    blank_brama.success("db")
    blank_brama.migrate()
    status = blank_brama.status("db")
    assert status.metadata == {"kept": True}
    assert status.state is State.CLOSED
    assert [event.kind.value for event in blank_brama.events("db")] == [
        "registered",
        "success",
        "transition",
    ]


def test_another_brama_sees_the_migration(blank_brama: Brama, blank_url: URL) -> None:
    blank_brama.migrate()
    other = Brama(blank_url.render_as_string(hide_password=False))
    try:
        other.register("db")
        assert blank_brama.status("db").state is State.UNKNOWN
    finally:
        other.dispose()


def test_tables_dropped_after_use_raise_schema_error(blank_brama: Brama, blank_url: URL) -> None:
    blank_brama.migrate()
    blank_brama.register("db")
    assert blank_brama.status("db").state is State.UNKNOWN
    engine = create_engine(blank_url)
    try:
        downgrade(engine, "base")
    finally:
        engine.dispose()
    with pytest.raises(SchemaError, match="migrate"):
        blank_brama.status("db")
    with pytest.raises(SchemaError, match="migrate"):
        blank_brama.success("db")
    blank_brama.migrate()
    assert blank_brama.connections() == []
    blank_brama.register("db")
    assert blank_brama.available("db") is True


def test_a_schema_migrated_by_a_newer_release_is_used_during_a_rolling_deploy(
    blank_brama: Brama, blank_url: URL
) -> None:
    """Hosts still on this release keep working after a newer one migrated the database."""
    blank_brama.migrate()
    engine = create_engine(blank_url)
    try:
        with engine.begin() as conn:
            conn.execute(text(f"UPDATE {VERSION_TABLE} SET version_num = 'from_a_newer_release'"))
    finally:
        engine.dispose()
    fresh = Brama(blank_url.render_as_string(hide_password=False))
    try:
        fresh.migrate()  # an older release migrating at start-up leaves the newer schema be
        with fresh.engine.connect() as conn:
            assert current(conn) == "from_a_newer_release"
        fresh.register("db")
        fresh.failure("db")
        assert fresh.status("db").total_failures == 1
        assert fresh.events("db")[0].kind.value == "registered"
    finally:
        fresh.dispose()


def _missing_url(db_url: URL, dialect: str, tmp_path: Path) -> URL:
    """A URL of a database that does not exist (on SQLite: a file in a missing directory)."""
    if dialect == "sqlite":
        return make_url(f"sqlite:///{tmp_path / 'no' / 'such' / 'dir' / 'brama.db'}")
    return db_url.set(database="brama_test_database_that_does_not_exist")


def _unreachable_url(db_url: URL, dialect: str, tmp_path: Path) -> URL:
    """A URL nothing answers at (on SQLite: a directory where the database file should be)."""
    if dialect == "sqlite":
        return make_url(f"sqlite:///{tmp_path}")
    return db_url.set(host="127.0.0.1", port=1)


@pytest.mark.parametrize("where", ["missing-database", "unreachable"])
@pytest.mark.parametrize("operation", [*sorted(OPERATIONS), "migrate"])
def test_a_database_that_is_not_there_raises_brama_database_error(
    db_url: URL, dialect: str, tmp_path: Path, where: str, operation: str
) -> None:
    make = _missing_url if where == "missing-database" else _unreachable_url
    error = _database_error(make(db_url, dialect, tmp_path), operation)
    assert isinstance(error, BramaError)
    assert operation in error.operation  # exactly the name: see the test below
    assert f"{error.operation}()" in str(error)


@pytest.mark.parametrize("operation", ["open", "close", "reset"])
def test_manual_calls_name_themselves_in_database_errors(
    db_url: URL, dialect: str, tmp_path: Path, operation: str
) -> None:
    error = _database_error(_unreachable_url(db_url, dialect, tmp_path), operation)
    assert error.operation == operation
    assert f"brama_sql {operation}()" in str(error)


def _database_error(url: URL, operation: str) -> BramaDatabaseError:
    """The error ``operation`` raises on a Brama at ``url``."""
    brama = Brama(url.render_as_string(hide_password=False))
    try:
        with pytest.raises(BramaDatabaseError) as caught:
            if operation == "migrate":
                brama.migrate()
            else:
                OPERATIONS[operation](brama)
    finally:
        brama.dispose()
    return caught.value
