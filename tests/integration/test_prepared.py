"""Prepared statements (:mod:`brama_sql.prepared`) run on the DBAPI cursor exactly what
SQLAlchemy's ``Connection.execute`` runs: the same rows with the same Python values, the same
new keys, the same errors; and an engine with statement listeners still sees every statement."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import create_engine, event, select
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, IntegrityError

from brama_sql import Brama, NotRegisteredError
from brama_sql.prepared import Prepared, execute
from brama_sql.rows import (
    ADMISSION,
    FIND,
    FIND_CIRCUIT,
    FIND_FOR_SHARE,
    FIND_FOR_UPDATE,
    STATUS,
    STATUSES,
    STATUSES_IN_SCOPE,
)
from brama_sql.schema import connections, events
from brama_sql.store import (
    INSERT_EVENT,
    LIVE_PERMITS,
    ROWS_WITH_NEWEST,
    ROWS_WITH_NEWEST_IN_SCOPE,
    SAVE_ROW,
    TAIL,
    TAIL_REPORTS,
)

AT = datetime(2026, 11, 30, 12, 0, 0, 123456, tzinfo=timezone.utc)


def _seeded(brama: Brama) -> int:
    """Two connections with a few events each, one with a rate policy, one open with
    permits; returns the id of ``svc``'s row."""
    brama.register("svc", scope="s", metadata={"team": "pay", "n": [1, 2]}, expiry=1.5)
    brama.register("rated", failure_rate_threshold=0.5, window=60, minimum_calls=100)
    for _ in range(3):
        brama.success("svc", scope="s", duration=0.25)
        brama.success("rated", duration=0.5)
    brama.failure("rated", reason="boom")
    with brama.engine.connect() as conn:
        row_id: int = conn.execute(
            select(connections.c.id).where(connections.c.identifier == "svc")
        ).scalar_one()
    return row_id


def _both(brama: Brama, statement: Prepared, parameters: dict[str, Any]) -> tuple[Any, Any]:
    """The rows of ``statement`` through SQLAlchemy and through :func:`execute`."""
    with brama.engine.connect() as conn:
        expected = [
            tuple(row)
            for row in conn.execute(statement.statement_for(conn.dialect), parameters).all()
        ]
        got = [tuple(row) for row in execute(conn, statement, parameters).all()]
    return expected, got


@pytest.mark.parametrize(
    ("statement", "parameters"),
    [
        (FIND, {"identifier": "svc", "scope": "s"}),
        (FIND_FOR_UPDATE, {"identifier": "svc", "scope": "s"}),
        (FIND_FOR_SHARE, {"identifier": "svc", "scope": "s"}),
        (FIND_CIRCUIT, {"identifier": "rated", "scope": ""}),
        (ADMISSION, {"identifier": "svc", "scope": "s"}),
        (STATUS, {"identifier": "svc", "scope": "s"}),
        (STATUS, {"identifier": "nobody", "scope": ""}),
        (TAIL, {"row_id": None, "through": 0}),
        (TAIL_REPORTS, {"row_id": None, "through": 0}),
        (LIVE_PERMITS, {"row_id": None, "episode": 0, "holder": "me", "now": AT}),
        (STATUSES, {}),
        (STATUSES_IN_SCOPE, {"scope": "s"}),
        (ROWS_WITH_NEWEST, {}),
        (ROWS_WITH_NEWEST_IN_SCOPE, {"scope": ""}),
    ],
    ids=[
        "find",
        "find_for_update",
        "find_for_share",
        "find_circuit",
        "admission",
        "status",
        "status_missing",
        "tail",
        "tail_reports",
        "permits",
        "statuses",
        "statuses_in_scope",
        "rows_with_newest",
        "rows_with_newest_in_scope",
    ],
)
def test_reads_return_what_sqlalchemy_returns(
    brama: Brama, statement: Prepared, parameters: dict[str, Any]
) -> None:
    row_id = _seeded(brama)
    given = {key: row_id if value is None else value for key, value in parameters.items()}
    expected, got = _both(brama, statement, given)
    assert got == expected
    for got_row, expected_row in zip(got, expected, strict=True):
        assert [type(value) for value in got_row] == [type(value) for value in expected_row]
    if statement in (FIND, FIND_FOR_UPDATE, STATUS) and expected:
        with brama.engine.connect() as conn:
            row = execute(conn, statement, given).one()
        assert row.metadata == {"team": "pay", "n": [1, 2]}


def test_rows_have_attributes_named_like_the_columns(brama: Brama) -> None:
    _seeded(brama)
    with brama.engine.connect() as conn:
        row = execute(conn, STATUS, {"identifier": "svc", "scope": "s"}).one()
    assert row.identifier == "svc"
    assert row.expiry == 1.5
    assert row.registered_at.tzinfo is not None
    assert row.tail_successes >= 0


def test_an_insert_returns_its_key_and_an_update_writes_its_values(brama: Brama) -> None:
    row_id = _seeded(brama)
    values = {
        "connection_id": row_id,
        "identifier": "svc",
        "scope": "s",
        "kind": "success",
        "occurred_at": AT,
        "from_state": None,
        "to_state": None,
        "reason": "r\u00e9sum\u00e9 \u2713",
        "failure_count": 0,
        "cause": None,
        "probe": False,
        "duration": 0.125,
        "actor": "test",
        "details": {"a": 1},
        "call_id": 12345678901,
    }
    with brama.engine.begin() as conn:
        inserted = execute(conn, INSERT_EVENT, values)
        assert inserted.inserted_primary_key is not None
        (key,) = inserted.inserted_primary_key
        newest = conn.execute(select(events.c.id).order_by(events.c.id.desc()).limit(1))
        assert key == newest.scalar_one()
        execute(conn, SAVE_ROW, {"row_id": row_id, "failure_count": 7, "last_event_at": AT})
    with brama.engine.connect() as conn:
        event_row = conn.execute(select(events).where(events.c.id == key)).one()
        row = conn.execute(select(connections).where(connections.c.id == row_id)).one()
    assert event_row.occurred_at == AT
    assert event_row.reason == "r\u00e9sum\u00e9 \u2713"
    assert event_row.details == {"a": 1}
    assert row.failure_count == 7
    assert row.last_event_at == AT
    assert row.tallied_through == key, "the UPDATE's subquery ran"


def test_a_driver_error_is_wrapped_as_sqlalchemy_wraps_it(brama: Brama) -> None:
    row_id = _seeded(brama)
    with brama.engine.connect() as conn:
        taken = conn.execute(select(events.c.id).limit(1)).scalar_one()
    duplicate = {
        "id": taken,
        "connection_id": row_id,
        "identifier": "svc",
        "scope": "s",
        "kind": "success",
        "occurred_at": AT,
        "failure_count": 0,
        "probe": False,
        "actor": "test",
    }
    with brama.engine.connect() as conn, pytest.raises(IntegrityError) as caught:
        execute(conn, INSERT_EVENT, duplicate)
    assert isinstance(caught.value, DBAPIError)
    assert not caught.value.connection_invalidated
    assert "INSERT INTO brama_events" in str(caught.value)


def test_listeners_of_statements_still_see_every_statement(db_url: URL) -> None:
    """A host's engine with ``before_cursor_execute`` listeners (tracing): brama_sql's
    statements go through SQLAlchemy there, reads and writes alike."""
    engine = create_engine(db_url)
    seen: list[str] = []

    @event.listens_for(engine, "before_cursor_execute")
    def trace(*arguments: Any) -> None:
        seen.append(arguments[2])

    try:
        brama = Brama(engine)
        brama.register("svc")
        brama.available("svc")
        brama.success("svc")
        brama.failure("svc")
        brama.status("svc")
        statements = "\n".join(seen)
        assert statements.count("FROM brama_connections") >= 4
        assert "INSERT INTO brama_events" in statements
        assert "UPDATE brama_connections" in statements
        assert brama.status("svc").total_successes == 1
    finally:
        engine.dispose()


def test_reads_see_the_time_written(brama: Brama) -> None:
    """Times go through the column type's processors both ways (SQLite stores text)."""
    brama.register("svc")
    brama.failure("svc")
    status = brama.status("svc")
    assert status.last_failure_time is not None
    assert status.last_failure_time.tzinfo is not None
    assert abs(status.last_failure_time - datetime.now(timezone.utc)) < timedelta(minutes=5)


def test_a_listener_added_while_a_read_runs_does_not_break_it(db_url: URL) -> None:
    """A host may add a ``before_cursor_execute`` listener at any time (a tracer instrumenting
    the engine from another thread); a read already on the raw DBAPI connection then finishes
    there, and the following calls are traced."""
    engine = create_engine(db_url)
    seen: list[str] = []
    armed: list[bool] = []

    def trace(*arguments: Any) -> None:
        seen.append(arguments[2])

    @event.listens_for(engine, "checkout")
    def instrument(*_: Any) -> None:  # once armed: added after the read took its connection
        if armed and not event.contains(engine, "before_cursor_execute", trace):
            event.listen(engine, "before_cursor_execute", trace)

    try:
        brama = Brama(engine)
        brama.register("svc")
        assert brama.available("svc")  # the schema is checked: reads now run raw
        armed.append(True)
        assert brama.available("svc")
        assert brama.status("svc").total_successes == 0
        assert any("FROM brama_connections" in statement for statement in seen)
    finally:
        engine.dispose()


def test_a_read_that_raises_gives_its_connection_back_clean(brama: Brama) -> None:
    """A raw read whose body raises a non-database error (``NotRegisteredError``) returns its
    DBAPI connection to the pool outside any transaction, and on PostgreSQL out of
    AUTOCOMMIT, the engine's level back."""
    brama.register("svc")
    assert brama.available("svc")
    for _ in range(2):
        with pytest.raises(NotRegisteredError):
            brama.status("nobody")
    assert brama.engine.pool.checkedout() == 0
    fairy = brama.engine.raw_connection()  # the one pooled connection
    try:
        driver = fairy.driver_connection
        dialect = brama.engine.dialect.name
        if dialect == "postgresql":
            assert driver is not None and driver.autocommit is False
            assert driver.info.transaction_status == 0  # IDLE
        elif dialect == "mysql":
            cursor = fairy.cursor()
            cursor.execute("SELECT @@in_transaction")
            assert cursor.fetchall()[0][0] == 0
            cursor.close()
        else:
            assert driver is not None and not driver.in_transaction
    finally:
        fairy.close()
    assert brama.status("svc").total_successes == 0


@pytest.mark.parametrize("dialect", ["postgresql"], indirect=True)
def test_a_psycopg_cursor_is_kept_with_its_connection_until_it_reads_many_rows(
    brama: Brama,
) -> None:
    from brama_sql.prepared import _KEPT_CURSOR, KEPT_CURSOR_ROWS
    from brama_sql.rows import STATUSES

    _seeded(brama)
    with brama.engine.connect() as conn:
        execute(conn, FIND, {"identifier": "svc", "scope": "s"}).one()
        owner, kept = conn.connection.info[_KEPT_CURSOR]
        assert owner is conn.connection.dbapi_connection
        assert execute(conn, FIND, {"identifier": "rated", "scope": ""}).one().identifier == "rated"
        assert conn.connection.info[_KEPT_CURSOR][1] is kept, "the next statement reuses it"
        with pytest.raises(DBAPIError):
            execute(conn, TAIL, {"row_id": "not a number", "through": 0})
        assert _KEPT_CURSOR not in conn.connection.info and kept.closed, "dropped on an error"
        conn.connection.dbapi_connection.rollback()  # type: ignore[union-attr]
        for number in range(KEPT_CURSOR_ROWS + 1):
            brama.register(f"many-{number}")
        assert len(execute(conn, STATUSES, {}).all()) > KEPT_CURSOR_ROWS
        assert _KEPT_CURSOR not in conn.connection.info, "a cursor holding many rows is closed"
        assert execute(conn, FIND, {"identifier": "svc", "scope": "s"}).one().identifier == "svc"
        assert not conn.connection.info[_KEPT_CURSOR][1].closed
    # Every call's statements on a pooled connection go through its kept cursor.
    assert brama.status("svc", scope="s").total_successes == 3
    assert brama.available("svc", scope="s")


@pytest.mark.parametrize("dialect", ["postgresql"], indirect=True)
def test_no_cursor_is_kept_on_a_pool_that_shares_its_connection(db_url: URL) -> None:
    """A StaticPool hands its one connection to every thread and every Brama on the engine:
    two instances reading at once must not share a cursor (each would read the other's rows)."""
    import threading

    from sqlalchemy.pool import StaticPool

    from brama_sql.prepared import _KEPT_CURSOR

    engine = create_engine(db_url, poolclass=StaticPool)
    first, second = Brama(engine), Brama(engine)
    try:
        first.register("x")
        second.register("y")
        failures: list[BaseException] = []

        def read(brama: Brama, identifier: str) -> None:
            try:
                for _ in range(150):
                    assert brama.status(identifier).identifier == identifier
            except BaseException as error:  # reported below
                failures.append(error)

        threads = [
            threading.Thread(target=read, args=(first, "x")),
            threading.Thread(target=read, args=(second, "y")),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not failures, failures
        with engine.connect() as conn:
            assert _KEPT_CURSOR not in conn.connection.info
    finally:
        first.dispose()
        second.dispose()
        engine.dispose()


@pytest.mark.parametrize("dialect", ["postgresql"], indirect=True)
def test_postgresql_s_lateral_tails_are_the_tails_of_the_portable_statement(
    brama: Brama,
) -> None:
    """PostgreSQL reads statuses with a LATERAL tail (STATUS, STATUSES); the other dialects'
    scalar subqueries give the same rows, tails included."""
    from brama_sql.rows import STATUSES

    _seeded(brama)
    for _ in range(3):
        brama.success("rated")  # healthy successes: a tail not folded yet
    with brama.engine.connect() as conn:
        portable = [tuple(row) for row in conn.execute(STATUSES.statement).all()]
        lateral = [tuple(row) for row in conn.execute(STATUSES.statement_for(conn.dialect))]
        assert STATUSES.statement_for(conn.dialect) is not STATUSES.statement
    assert lateral == portable
    assert {row[-2] for row in lateral} != {0}, "some row has a tail"
