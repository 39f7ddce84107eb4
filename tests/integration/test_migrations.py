"""The schema is made only by the shipped Alembic scripts, on every dialect."""

from __future__ import annotations

import json
import multiprocessing
import threading
import time
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import URL, Connection

from brama_sql import Brama, SchemaError
from brama_sql.migration import (
    LOCK_NAME,
    PG_LOCK_KEY,
    VERSION_TABLE,
    check,
    current,
    downgrade,
    head,
    upgrade,
)
from brama_sql.replay import verify
from brama_sql.schema import metadata

BRAMA_TABLES = {"brama_connections", "brama_events", "brama_permits", VERSION_TABLE}


def _tables(url: URL) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_upgrade_downgrade_upgrade(blank_url: URL) -> None:
    engine = create_engine(blank_url)
    try:
        upgrade(engine)
        assert _tables(blank_url) >= BRAMA_TABLES
        with engine.connect() as conn:
            assert current(conn) == head()
            check(conn)
        downgrade(engine, "base")
        assert not _tables(blank_url) & (BRAMA_TABLES - {VERSION_TABLE})
        with engine.connect() as conn:
            assert current(conn) is None
            with pytest.raises(SchemaError, match="migrate"):
                check(conn)
        upgrade(engine)
        with engine.connect() as conn:
            assert current(conn) == head()
    finally:
        engine.dispose()


def test_models_and_migrations_agree(db_url: URL) -> None:
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn,
                opts={
                    "compare_type": True,
                    "include_object": lambda obj, name, type_, *_: (
                        type_ != "table" or name in metadata.tables
                    ),
                },
            )
            assert compare_metadata(context, metadata) == []
    finally:
        engine.dispose()


def test_migrate_is_idempotent_and_keeps_the_host_alembic_history(blank_url: URL) -> None:
    engine = create_engine(blank_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)"))
            conn.execute(text("INSERT INTO alembic_version VALUES ('host_rev_1')"))
            conn.execute(text("CREATE TABLE host_table (id INTEGER PRIMARY KEY)"))
        brama = Brama(blank_url.render_as_string(hide_password=False))
        brama.migrate()
        brama.migrate()
        brama.dispose()
        with engine.connect() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == (
                "host_rev_1"
            )
            assert current(conn) == head()
        assert {"host_table", "alembic_version"} <= _tables(blank_url)
    finally:
        engine.dispose()


def test_migrate_on_a_connection_the_host_passes_in(blank_url: URL) -> None:
    engine = create_engine(blank_url)
    brama = Brama(engine)
    try:
        with engine.begin() as conn:
            brama.migrate(conn)
        brama.register("api")
        assert brama.status("api").identifier == "api"
    finally:
        engine.dispose()


def _migrate_in_child(url: str, start: object) -> None:
    start.wait()  # type: ignore[attr-defined]
    brama = Brama(url)
    brama.migrate()
    brama.dispose()


def test_concurrent_migrations_from_several_processes(blank_url: URL) -> None:
    url = blank_url.render_as_string(hide_password=False)
    context = multiprocessing.get_context("spawn")
    start = context.Event()
    children = [context.Process(target=_migrate_in_child, args=(url, start)) for _ in range(4)]
    for child in children:
        child.start()
    start.set()
    for child in children:
        child.join(120)
    assert [child.exitcode for child in children] == [0, 0, 0, 0]
    engine = create_engine(blank_url)
    try:
        with engine.connect() as conn:
            assert current(conn) == head()
            rows = conn.execute(text(f"SELECT count(*) FROM {VERSION_TABLE}")).scalar()
        assert rows == 1
    finally:
        engine.dispose()


def _hold_the_migration_lock(holder: Connection, dialect: str) -> None:
    """Take on ``holder`` what a migration takes first: PostgreSQL's advisory lock, MySQL's
    named lock, SQLite's write lock."""
    if dialect == "postgresql":
        holder.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_LOCK_KEY})
    elif dialect == "mysql":
        holder.execute(text("SELECT GET_LOCK(:name, 5)"), {"name": LOCK_NAME})
    else:
        holder.exec_driver_sql("BEGIN IMMEDIATE")


def test_migrate_waits_for_another_migration_longer_than_the_lock_wait_limit(
    blank_url: URL, dialect: str
) -> None:
    """The lock wait limit is for calls; a migration waits for another process's migration.
    (The database is behind: on a current one migrate() takes no lock, see
    test_migrate_on_a_current_database_takes_no_lock.)"""
    engine = create_engine(blank_url)
    upgrade(engine, "0001")
    holder = engine.connect()
    _hold_the_migration_lock(holder, dialect)

    def release() -> None:
        time.sleep(2)  # the other migration takes a while (not waiting for an expiry)
        if dialect == "mysql":
            holder.execute(text("SELECT RELEASE_LOCK(:name)"), {"name": LOCK_NAME})
        holder.rollback()

    brama = Brama(blank_url.render_as_string(hide_password=False), lock_timeout=0.5)
    releaser = threading.Thread(target=release)
    releaser.start()
    try:
        started = time.monotonic()
        brama.migrate()
        assert time.monotonic() - started > 1.5, "it waited for the other migration"
        with engine.connect() as conn:
            assert current(conn) == head()
    finally:
        releaser.join()
        holder.close()
        engine.dispose()
        brama.dispose()


def test_migrate_on_a_current_database_takes_no_lock(db_url: URL, dialect: str) -> None:
    """migrate() reads the revision first and returns without waiting for another writer:
    SQLite's write lock (BEGIN IMMEDIATE) or the migration lock held elsewhere."""
    brama = Brama(db_url.render_as_string(hide_password=False), lock_timeout=5)
    brama.connections()  # as an application would: on SQLite the file is in WAL from here
    engine = create_engine(db_url)
    holder = engine.connect()
    _hold_the_migration_lock(holder, dialect)
    done = threading.Event()
    failed: list[BaseException] = []

    def migrate() -> None:
        try:
            brama.migrate()
        except BaseException as error:  # reported below
            failed.append(error)
        finally:
            done.set()

    migrating = threading.Thread(target=migrate)
    started = time.monotonic()
    migrating.start()
    try:
        # Waiting for the lock would take the migration wait (60 s, 120 s, or forever).
        assert done.wait(10), "migrate() waited for the lock"
        assert time.monotonic() - started < 3
        assert failed == []
    finally:
        if dialect == "mysql":
            holder.execute(text("SELECT RELEASE_LOCK(:name)"), {"name": LOCK_NAME})
        holder.rollback()
        holder.close()
        migrating.join(10)
        engine.dispose()
        brama.dispose()
    with brama.engine.connect() as conn:
        assert current(conn) == head()


def _metadata_type(conn: Any) -> str:
    return str(
        conn.execute(
            text(
                "SELECT data_type FROM information_schema.columns "
                "WHERE table_name = 'brama_connections' AND column_name = 'metadata'"
            )
        ).scalar()
    )


def test_revision_0002_keeps_rows_both_ways_and_makes_metadata_jsonb(
    blank_url: URL, dialect: str
) -> None:
    """Upgrade from 0001 with rows present (metadata kept, jsonb on PostgreSQL, legacy
    registrations still replayed), then downgrade to 0001 with rows present."""
    engine = create_engine(blank_url)
    url = blank_url.render_as_string(hide_password=False)
    try:
        upgrade(engine, "0001")
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO brama_connections (identifier, scope, state, failure_count, "
                    "failure_threshold, expiry, episode, metadata, registered_at) VALUES "
                    "('legacy', '', 'closed', 1, 5, 60.0, 0, :metadata, :at)"
                ),
                {"metadata": '{"owner": "team-a", "tags": ["x", "ü"]}', "at": "2020-01-01"},
            )
            connection_id = conn.execute(text("SELECT id FROM brama_connections")).scalar()
            legacy_log = [
                ("registered", 0, None, None, None, None),
                ("failure", 1, None, None, None, None),
                ("transition", 1, "unknown", "closed", "first failure", "report"),
            ]
            for kind, count, before, after, reason, cause in legacy_log:
                conn.execute(
                    text(
                        "INSERT INTO brama_events (connection_id, identifier, scope, kind, "
                        "occurred_at, failure_count, from_state, to_state, reason, cause, probe) "
                        "VALUES (:id, 'legacy', '', :kind, :at, :count, :before, :after, "
                        ":reason, :cause, :probe)"
                    ),
                    {
                        "id": connection_id,
                        "kind": kind,
                        "at": "2020-01-02",
                        "count": count,
                        "before": before,
                        "after": after,
                        "reason": reason,
                        "cause": cause,
                        "probe": False,
                    },
                )
        upgrade(engine)
        with engine.connect() as conn:
            assert current(conn) == head()
            if dialect == "postgresql":
                assert _metadata_type(conn) == "jsonb"
        brama = Brama(url)
        status = brama.status("legacy")
        assert status.metadata == {"owner": "team-a", "tags": ["x", "ü"]}
        assert status.total_failures == 1
        # A registration logged before 0002 records no settings: the replay takes them from
        # the row and puts back the old values of later reconfigurations.
        assert brama.events("legacy")[0].details is None
        brama.configure("legacy", failure_threshold=2)
        brama.configure("legacy", expiry=5.0, failure_threshold=4)
        brama.failure("legacy")
        verify(brama.engine, "legacy")
        brama.dispose()

        downgrade(engine, "0001")
        with engine.connect() as conn:
            assert current(conn) == "0001"
            if dialect == "postgresql":
                assert _metadata_type(conn) == "json"
            assert "details" not in {c["name"] for c in inspect(conn).get_columns("brama_events")}
            stored = conn.execute(text("SELECT metadata FROM brama_connections")).scalar()
            events_left = conn.execute(text("SELECT count(*) FROM brama_events")).scalar()
        if isinstance(stored, str):  # psycopg decodes json itself; the others return text
            stored = json.loads(stored)
        assert stored == {"owner": "team-a", "tags": ["x", "ü"]}
        assert events_left == 6  # registered, failure, transition, 2 configured, failure
    finally:
        engine.dispose()
