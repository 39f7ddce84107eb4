"""Any text round-trips on every dialect: on MariaDB/MySQL every brama_sql table and text column
is utf8mb4 and so is the connection, whatever the database's default character set (the tests
create their MariaDB databases with ``CHARACTER SET latin1``, the server default before 11.6).
Revision 0003 converts the tables of an existing database, rows kept."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import create_engine, event, select, text
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.exc import DBAPIError

import brama_sql.brama
from brama_sql import Brama, Kind, State
from brama_sql.migration import current, downgrade, head, upgrade
from brama_sql.replay import verify
from brama_sql.schema import metadata, permits

START = datetime(2031, 7, 1, 9, 0, tzinfo=timezone.utc)
IDENTIFIER = "платежи-決済-💳"
SCOPE = "склад-倉庫-📦"
REASON = "Тайм-аут соединения: 接続がタイムアウトしました 🔥🚀"
METADATA: dict[str, Any] = {
    "владелец": "команда-Ж",
    "説明": "決済API",
    "emoji": "🔥🚀👍🏽",
    "nested": {"список": ["ü", "日本", "𝄞"]},
}
HOST = "хост-東京-🛰"
EXACT_COLUMNS = {"identifier", "scope"}
mysql_only = pytest.mark.parametrize("dialect", ["mysql"], indirect=True)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def engine(latin1_url: URL) -> Iterator[Engine]:
    made = create_engine(latin1_url)
    yield made
    made.dispose()


def text_columns(conn: Connection) -> dict[tuple[str, str], tuple[str, str]]:
    """``(table, column) -> (character set, collation)`` of brama_sql's text columns."""
    rows = conn.execute(
        text(
            "SELECT table_name, column_name, character_set_name, collation_name "
            "FROM information_schema.columns WHERE table_schema = DATABASE() "
            "AND character_set_name IS NOT NULL"
        )
    ).all()
    return {
        (t, c): (charset, collation) for t, c, charset, collation in rows if t in metadata.tables
    }


def table_collations(conn: Connection) -> dict[str, str]:
    rows = conn.execute(
        text(
            "SELECT table_name, table_collation FROM information_schema.tables "
            "WHERE table_schema = DATABASE()"
        )
    ).all()
    return {table: collation for table, collation in rows if table in metadata.tables}


def assert_utf8mb4_everywhere(conn: Connection) -> None:
    """Every text column utf8mb4, the exact ones with their binary no-pad collation, and
    every table's default utf8mb4 (a column added later gets it too)."""
    columns = text_columns(conn)
    assert {column for _table, column in columns} >= {"state", "kind", "reason", "actor", "holder"}
    assert {charset for charset, _collation in columns.values()} == {"utf8mb4"}
    mariadb = "mariadb" in str(conn.execute(text("SELECT VERSION()")).scalar()).lower()
    exact = "utf8mb4_nopad_bin" if mariadb else "utf8mb4_0900_bin"
    for (table, column), (_charset, collation) in columns.items():
        if column in EXACT_COLUMNS:
            assert collation == exact, f"{table}.{column} keeps its exact collation"
    collations = table_collations(conn)
    assert set(collations) == set(metadata.tables)
    assert all(collation.startswith("utf8mb4_") for collation in collations.values())


@mysql_only
@pytest.mark.parametrize("made_by", ["migrations", "models"])
def test_every_text_column_is_utf8mb4_in_a_latin1_database(engine: Engine, made_by: str) -> None:
    with engine.connect() as conn:
        default = conn.execute(text("SELECT @@character_set_database")).scalar()
    assert default == "latin1", "the test's database really defaults to latin1"
    if made_by == "migrations":
        upgrade(engine)
    else:
        metadata.create_all(engine)
    with engine.connect() as conn:
        assert_utf8mb4_everywhere(conn)


def _character_sets(url: URL) -> tuple[set[str], Any]:
    """What a connection of a Brama on ``url`` talks, and the ``charset`` it asked PyMySQL for."""
    brama = Brama(url.render_as_string(hide_password=False))
    asked: dict[str, Any] = {}

    @event.listens_for(brama.engine, "do_connect")
    def _connecting(_dialect: Any, _record: Any, _args: Any, kwargs: dict[str, Any]) -> None:
        asked.update(kwargs)

    try:
        with brama.engine.connect() as conn:
            talks = conn.execute(
                text(
                    "SELECT @@character_set_client, @@character_set_connection, "
                    "@@character_set_results"
                )
            ).one()
    finally:
        brama.dispose()
    return set(talks), asked.get("charset")


@mysql_only
def test_brama_sql_engines_talk_utf8mb4_unless_the_url_says_otherwise(latin1_url: URL) -> None:
    # Asked for explicitly, not left to the driver's default.
    assert _character_sets(latin1_url) == ({"utf8mb4"}, "utf8mb4")
    latin1 = latin1_url.update_query_dict({"charset": "latin1"})
    assert _character_sets(latin1) == ({"latin1"}, "latin1")


def test_any_text_round_trips_exactly(
    latin1_url: URL, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Identifiers, scopes, reasons, actors, permit holders and metadata in Cyrillic, Japanese
    and emoji come back as they went in, on a latin1 MariaDB database too."""
    monkeypatch.setattr(brama_sql.brama, "_hostname", lambda: HOST)
    clock = Clock()
    brama = Brama(
        latin1_url.render_as_string(hide_password=False),
        clock=clock,
        failure_threshold=1,
        half_open_max_calls=1,
    )
    try:
        brama.migrate()
        actor = brama.actor()
        assert HOST in actor
        brama.register(IDENTIFIER, scope=SCOPE, metadata=METADATA)
        brama.failure(IDENTIFIER, scope=SCOPE, reason=REASON)
        clock.now += timedelta(seconds=61)
        assert brama.available(IDENTIFIER, scope=SCOPE) is True  # a probe permit, held by actor
        with engine.connect() as conn:
            assert conn.execute(select(permits.c.holder)).scalars().all() == [actor]
        brama.success(IDENTIFIER, scope=SCOPE, reason="восстановлено ✅ 回復")
        brama.open(IDENTIFIER, scope=SCOPE, reason="ручное открытие 🔒")
        brama.configure(IDENTIFIER, scope=SCOPE, metadata={**METADATA, "ещё": "もっと 🌸"})

        status = brama.status(IDENTIFIER, scope=SCOPE)
        assert (status.identifier, status.scope) == (IDENTIFIER, SCOPE)
        assert status.metadata == {**METADATA, "ещё": "もっと 🌸"}
        assert status.state is State.OPEN
        logged = brama.events(IDENTIFIER, scope=SCOPE)
        reasons = [event.reason for event in logged if event.kind in (Kind.FAILURE, Kind.SUCCESS)]
        assert reasons == [REASON, "восстановлено ✅ 回復"]
        assert "ручное открытие 🔒" in [event.reason for event in logged]
        assert {event.actor for event in logged} == {actor}
        configured = [event for event in logged if event.kind is Kind.CONFIGURED]
        assert configured[0].details is not None
        assert configured[0].details["new"]["metadata"]["ещё"] == "もっと 🌸"
        verify(brama.engine, IDENTIFIER, SCOPE)
    finally:
        brama.dispose()


def _column_charset(conn: Connection, table: str, column: str) -> str:
    return text_columns(conn)[(table, column)][0]


@mysql_only
def test_revision_0003_converts_a_latin1_database_with_rows_and_downgrades(
    latin1_url: URL, engine: Engine
) -> None:
    upgrade(engine, "0002")
    with engine.connect() as conn:
        assert _column_charset(conn, "brama_events", "reason") == "latin1"
    kept = "café Müller, señor: ¿qué tal?"
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO brama_connections (identifier, scope, state, failure_count, "
                "failure_threshold, expiry, episode, metadata, registered_at) VALUES "
                "('legacy', '', 'closed', 1, 5, 60.0, 0, '{}', '2020-01-01')"
            )
        )
        connection_id = conn.execute(text("SELECT id FROM brama_connections")).scalar()
        for kind, count, before, after, reason, cause in [
            ("registered", 0, None, None, None, None),
            ("failure", 1, None, None, kept, None),
            ("transition", 1, "unknown", "closed", "first failure", "report"),
        ]:
            conn.execute(
                text(
                    "INSERT INTO brama_events (connection_id, identifier, scope, kind, "
                    "occurred_at, failure_count, from_state, to_state, reason, cause, probe, "
                    "actor) VALUES (:id, 'legacy', '', :kind, '2020-01-02', :count, :before, "
                    ":after, :reason, :cause, 0, 'hôte:1:ab:2')"
                ),
                {
                    "id": connection_id,
                    "kind": kind,
                    "count": count,
                    "before": before,
                    "after": after,
                    "reason": reason,
                    "cause": cause,
                },
            )
        conn.execute(
            text(
                "INSERT INTO brama_permits (connection_id, episode, holder, claimed_at, "
                "expires_at) VALUES (:id, 0, 'hôte:1:ab:2', '2020-01-02', '2020-01-03')"
            ),
            {"id": connection_id},
        )
    # What 0003 fixes: at 0002 a Cyrillic reason is refused (or stored as '?').
    with engine.connect() as conn:
        try:
            conn.execute(
                text("UPDATE brama_events SET reason = :r WHERE kind = 'registered'"),
                {"r": REASON},
            )
            stored = conn.execute(
                text("SELECT reason FROM brama_events WHERE kind = 'registered'")
            ).scalar()
        except DBAPIError:
            stored = None
        finally:
            conn.rollback()
    assert stored != REASON

    upgrade(engine)
    with engine.connect() as conn:
        assert current(conn) == head()
        assert_utf8mb4_everywhere(conn)
        assert (
            conn.execute(text("SELECT reason FROM brama_events WHERE kind = 'failure'")).scalar()
            == kept
        )
        assert set(conn.execute(text("SELECT actor FROM brama_events")).scalars()) == {
            "hôte:1:ab:2"
        }
        assert conn.execute(text("SELECT holder FROM brama_permits")).scalar() == "hôte:1:ab:2"
    brama = Brama(latin1_url.render_as_string(hide_password=False))
    try:
        assert brama.status("legacy").total_failures == 1
        brama.failure("legacy", reason=REASON)
        assert brama.events("legacy")[-1].reason == REASON
        verify(brama.engine, "legacy")
    finally:
        brama.dispose()

    downgrade(engine, "0002")
    with engine.connect() as conn:
        assert current(conn) == "0002"
        reasons = conn.execute(text("SELECT reason FROM brama_events ORDER BY id")).scalars().all()
    assert reasons == [None, kept, "first failure", REASON], "the downgrade keeps every row"
    upgrade(engine)
    with engine.connect() as conn:
        assert current(conn) == head()
        assert_utf8mb4_everywhere(conn)
