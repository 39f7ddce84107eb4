"""Schema faults: each is a SchemaError that says what is wrong and what to run, never a raw
"no such table"; migrate() repairs what it can (a table missing at the head revision, an empty
version table beside tables that match the head) and refuses clearly what it cannot, writing
nothing. Every case on every dialect."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import URL, Engine

from brama_sql import Brama, SchemaError, State
from brama_sql.migration import VERSION_TABLE, check, current, head, stamp, upgrade
from brama_sql.schema import metadata

TABLES = list(metadata.tables)
START = datetime(2031, 5, 1, 12, 0, tzinfo=timezone.utc)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


USES: dict[str, Callable[[Brama], Any]] = {
    "brama_connections": lambda brama: brama.status("kept"),
    "brama_events": lambda brama: brama.events(),
    "brama_permits": lambda brama: brama.available("kept"),  # claims a probe permit
    "brama_rollups": lambda brama: brama.prune(30),  # folds the registration into a rollup
}
"""A call that needs each table (in the scenario below: 'kept' is half-open, permits limited)."""


@pytest.fixture
def engine(blank_url: URL) -> Iterator[Engine]:
    made = create_engine(blank_url)
    yield made
    made.dispose()


def url_text(url: URL) -> str:
    return url.render_as_string(hide_password=False)


def drop(engine: Engine, *tables: str) -> None:
    with engine.begin() as conn:
        for table in tables:
            conn.execute(text(f"DROP TABLE {table}"))


def set_revision(engine: Engine, revision: str) -> None:
    with engine.begin() as conn:
        conn.execute(text(f"UPDATE {VERSION_TABLE} SET version_num = :rev"), {"rev": revision})


def tables_and_revision(engine: Engine) -> tuple[set[str], str | None]:
    with engine.connect() as conn:
        return set(inspect(conn).get_table_names()) & {*TABLES, VERSION_TABLE}, current(conn)


def schema_error(call: Callable[[], Any]) -> str:
    """The message of the SchemaError ``call`` raises."""
    with pytest.raises(SchemaError) as caught:
        call()
    message = str(caught.value)
    assert "no such table" not in message.lower() and "doesn't exist" not in message
    return message


@pytest.mark.parametrize("table", TABLES)
def test_a_table_dropped_at_the_head_revision_is_a_schema_error_and_migrate_recreates_it(
    blank_url: URL, engine: Engine, table: str
) -> None:
    clock = Clock()
    options: dict[str, Any] = {"clock": clock, "failure_threshold": 1, "half_open_max_calls": 1}
    brama = Brama(url_text(blank_url), **options)
    fresh = Brama(url_text(blank_url), **options)
    try:
        brama.migrate()
        brama.register("kept")
        brama.failure("kept", reason="down")
        clock.now += timedelta(seconds=61)  # half-open from now on
        drop(engine, table)

        # A Brama that never looked at the database, and one that did, say what is wrong.
        for who in (fresh, brama):
            message = schema_error(lambda who=who: USES[table](who))  # type: ignore[misc]
            assert f"table {table} is missing" in message
            assert "brama-sql migrate" in message

        brama.migrate()
        assert tables_and_revision(engine) == ({*TABLES, VERSION_TABLE}, head())
        with engine.connect() as conn:
            check(conn)
        if table == "brama_connections":
            assert [item.identifier for item in brama.connections()] == []
            brama.register("kept", failure_threshold=1)
            brama.failure("kept")
            clock.now += timedelta(seconds=61)
        else:
            assert brama.status("kept").failure_count == 1, "the row was kept"
        history = [event.kind.value for event in brama.events("kept")]
        if table != "brama_events":
            assert history[:2] == ["registered", "failure"], "the history was kept"
        assert fresh.available("kept") is True, "a probe permit, claimed after the repair"
        assert brama.available("kept") is False, "the one permit is taken"
        fresh.success("kept")
        assert brama.status("kept").state is State.CLOSED
    finally:
        brama.dispose()
        fresh.dispose()


@pytest.mark.parametrize("lost", ["version row", "version table", "version row and a table"])
def test_tables_without_a_recorded_revision_that_match_the_head_get_it_recorded(
    blank_url: URL, engine: Engine, lost: str
) -> None:
    brama = Brama(url_text(blank_url))
    try:
        brama.migrate()
        brama.register("kept", metadata={"owner": "team-a"})
        brama.failure("kept", reason="down")
        with engine.begin() as conn:
            if lost == "version table":
                conn.execute(text(f"DROP TABLE {VERSION_TABLE}"))
            else:
                conn.execute(text(f"DELETE FROM {VERSION_TABLE}"))
        if lost == "version row and a table":
            drop(engine, "brama_permits")

        fresh = Brama(url_text(blank_url))
        message = schema_error(lambda: fresh.status("kept"))
        fresh.dispose()
        assert "records no revision" in message and "do not exist" not in message
        assert "brama-sql migrate" in message

        brama.migrate()  # no "table already exists"
        assert tables_and_revision(engine) == ({*TABLES, VERSION_TABLE}, head())
        status = brama.status("kept")
        assert (status.metadata, status.total_failures) == ({"owner": "team-a"}, 1)
        assert [event.reason for event in brama.events("kept")][1] == "down"
        brama.migrate()  # and idempotent from there
        assert tables_and_revision(engine)[1] == head()
    finally:
        brama.dispose()


def test_tables_without_a_revision_that_differ_from_the_head_are_refused_until_stamped(
    blank_url: URL, engine: Engine
) -> None:
    upgrade(engine, "0001")
    with engine.begin() as conn:
        conn.execute(text(f"DELETE FROM {VERSION_TABLE}"))
    brama = Brama(url_text(blank_url))
    try:
        message = schema_error(brama.migrate)
        assert "brama_events.details" in message, "it names a difference"
        assert "stamp" in message, "and the way out"
        with engine.connect() as conn:
            assert current(conn) is None
            columns = {column["name"] for column in inspect(conn).get_columns("brama_events")}
        assert "details" not in columns, "nothing was changed"

        stamp(engine, "0001")
        brama.migrate()
        assert tables_and_revision(engine)[1] == head()
        brama.register("db")
        assert brama.status("db").state is State.UNKNOWN
    finally:
        brama.dispose()


@pytest.mark.parametrize("dropped", [["brama_events"], TABLES], ids=["one", "all"])
def test_an_unknown_revision_with_missing_tables_is_refused_with_what_to_run(
    blank_url: URL, engine: Engine, dropped: list[str]
) -> None:
    brama = Brama(url_text(blank_url))
    try:
        brama.migrate()
        drop(engine, *dropped)
        set_revision(engine, "from_a_newer_release")
        before = tables_and_revision(engine)

        for call in (lambda: brama.events(), brama.migrate):
            message = schema_error(call)
            assert "from_a_newer_release" in message and "does not know" in message
            assert all(table in message for table in dropped)
            assert "brama-sql migrate" in message
        assert tables_and_revision(engine) == before, "migrate() wrote nothing"
    finally:
        brama.dispose()


def test_an_older_revision_with_a_missing_table_is_refused(blank_url: URL, engine: Engine) -> None:
    upgrade(engine, "0001")
    drop(engine, "brama_permits")
    brama = Brama(url_text(blank_url))
    try:
        for call in (lambda: brama.status("db"), brama.migrate):
            message = schema_error(call)
            assert "revision 0001" in message and "brama_permits is missing" in message
            assert "cannot be upgraded" in message
        assert tables_and_revision(engine) == (
            {"brama_connections", "brama_events", VERSION_TABLE},
            "0001",
        )
    finally:
        brama.dispose()
