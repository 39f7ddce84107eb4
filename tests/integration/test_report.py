"""Reports over a window: ``Brama.report()``, ``brama-sql report --json`` and the documented SQL
of docs/sql-reporting.md give the same numbers on every database, also when the window reaches
into pruned hours; an episode open before the window counts from its start; an expiry no write
has logged ends an episode; the reads stay in the window. Time comes from freezegun."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from freezegun import freeze_time
from sqlalchemy import bindparam, create_engine, event, text
from sqlalchemy.engine import URL

from brama_sql import Brama, ConnectionReport, InvalidArgumentError, State
from brama_sql.cli import main
from brama_sql.replay import verify
from brama_sql.types import UTCDateTime

START = datetime(2031, 9, 1, 6, 0, tzinfo=timezone.utc)
REPORTING = Path(__file__).resolve().parents[2] / "docs" / "sql-reporting.md"
QUERY = re.compile(r"<!-- query: (?P<name>[\w-]+) -->\s*\n```sql\n(?P<sql>.*?)\n```", re.S)


def at(minutes: float) -> datetime:
    """``minutes`` after the scenario's start."""
    return START + timedelta(minutes=minutes)


def documented(name: str) -> str:
    """A named query of docs/sql-reporting.md."""
    queries = {m["name"]: m["sql"] for m in QUERY.finditer(REPORTING.read_text("utf-8"))}
    return queries[name]


def live_a_morning(make_brama: Callable[..., Brama]) -> Brama:
    """Five registered connections and one unregistered, over three hours from 06:00.

    - ``api``/shop trips at 06:10 (expiry 30 min): half-open 06:40 (logged by the probe at
      07:30, which fails: open again), half-open 08:00, closed by a probe at 08:10.
    - ``db``/shop opened by hand at 07:20, opened by hand again at 07:50, closed at 08:00.
    - ``idle`` (unscoped, expiry 10 min) trips at 08:50: its expiry at 09:00 is never logged.
    - ``quiet``/shop: successes at 06:05 only; ``search`` (unscoped): a failure and a success at
      08:30. ``gone``/shop: failures at 08:20, then unregistered (not in reports).
    """
    brama = make_brama(failure_threshold=2, expiry=1800.0)
    with freeze_time(START) as clock:
        brama.register("api", scope="shop")
        brama.register("db", scope="shop")
        brama.register("idle", expiry=600.0)
        brama.register("quiet", scope="shop")
        brama.register("search")
        brama.register("gone", scope="shop")
        clock.move_to(at(5))
        brama.success("quiet", scope="shop")
        brama.success("quiet", scope="shop")
        clock.move_to(at(10))
        brama.failure("api", scope="shop", reason="timeout")
        brama.failure("api", scope="shop", reason="timeout")
        clock.move_to(at(80))
        brama.open("db", scope="shop")
        clock.move_to(at(90))
        assert brama.available("api", scope="shop")
        brama.failure("api", scope="shop", reason="probe")
        clock.move_to(at(110))
        brama.open("db", scope="shop", reason="again")
        clock.move_to(at(120))
        brama.close("db", scope="shop")
        clock.move_to(at(130))
        assert brama.available("api", scope="shop")
        brama.success("api", scope="shop")
        clock.move_to(at(140))
        for _ in range(3):
            brama.failure("gone", scope="shop")
        brama.unregister("gone", scope="shop")
        clock.move_to(at(150))
        brama.failure("search")
        brama.success("search")
        clock.move_to(at(170))
        brama.failure("idle")
        brama.failure("idle")
    return brama


def sql_report(url: URL, since: datetime, until: datetime) -> dict[tuple[str, str], dict[str, Any]]:
    """The documented queries' rows, by (scope, identifier), merged."""
    dialect = url.get_backend_name()
    parameters = {"since": since, "until": until, "hour_before": since - timedelta(hours=1)}
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            for name in ("report_counts", f"report_open_time_{dialect}"):
                sql = documented(name)
                statement = text(sql).bindparams(
                    *(bindparam(key, type_=UTCDateTime()) for key in parameters if f":{key}" in sql)
                )
                used = {key: value for key, value in parameters.items() if f":{key}" in sql}
                for row in conn.execute(statement, used).mappings():
                    key = (row["scope"], row["identifier"])
                    merged.setdefault(key, {}).update(row)
    finally:
        engine.dispose()
    return merged


def as_time(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def number(value: Any) -> float | None:
    return None if value is None else float(value) if isinstance(value, Decimal) else value


def assert_all_agree(
    url: URL, brama: Brama, since: datetime, now: datetime
) -> list[ConnectionReport]:
    """Python, CLI JSON and SQL give the same numbers for the window; returns Python's."""
    with freeze_time(now):
        found = brama.report(since)
        printed = CliRunner().invoke(
            main,
            [
                "--url",
                url.render_as_string(hide_password=False),
                "report",
                "--json",
                "--since",
                since.isoformat(),
            ],
        )
    assert printed.exit_code == 0, printed.output
    document = json.loads(printed.stdout)
    assert as_time(document["since"]) == found.since == since
    assert as_time(document["until"]) == found.until == now
    cli = {(item["scope"], item["identifier"]): item for item in document["connections"]}
    sql = sql_report(url, since, now)
    assert list(sql) == [(item.scope or "", item.identifier) for item in found.connections]
    assert list(cli) == [(item.scope, item.identifier) for item in found.connections]
    for item in found.connections:
        row, printed_item = (
            sql[(item.scope or "", item.identifier)],
            cli[(item.scope, item.identifier)],
        )
        assert printed_item["state"] == item.state.value
        for name in ("reports", "failures", "trips"):
            assert row[name] == printed_item[name] == getattr(item, name), (item.identifier, name)
        assert printed_item["successes"] == item.successes == item.reports - item.failures
        if item.success_rate is None:
            assert row["success_rate"] is None and printed_item["success_rate"] is None
        else:
            assert number(row["success_rate"]) == round(item.success_rate, 3)
            assert printed_item["success_rate"] == item.success_rate
        for name in ("time_open", "longest_open"):
            assert number(row[name]) == pytest.approx(getattr(item, name), abs=1e-3)
            assert printed_item[name] == getattr(item, name)
        assert as_time(row["last_transition_at"]) == item.last_transition_at
        assert as_time(printed_item["last_transition_at"]) == item.last_transition_at
        for column, name in (("last_from", "from"), ("last_to", "to"), ("last_cause", "cause")):
            value = getattr(item, f"last_transition_{name}")
            expected = None if value is None else value.value
            assert row[column] == printed_item[f"last_transition_{name}"] == expected
        assert bool(row["complete"]) is printed_item["complete"] is item.complete
    return found.connections


def by_name(found: list[ConnectionReport]) -> dict[str, ConnectionReport]:
    return {item.identifier: item for item in found}


def test_python_cli_and_sql_agree_and_count_open_episodes(
    db_url: URL, make_brama: Callable[..., Brama]
) -> None:
    brama = live_a_morning(make_brama)
    # The window 07:00-09:10: api was open when it began (since 06:10; its expiry at 06:40 is
    # logged, so at 07:00 it was half-open), db opened twice by hand, idle's expiry at 09:00
    # is due but not logged.
    found = by_name(assert_all_agree(db_url, brama, at(60), at(190)))
    assert set(found) == {"api", "db", "idle", "quiet", "search"}
    api = found["api"]
    assert (api.reports, api.failures, api.trips) == (2, 1, 1)
    assert api.time_open == api.longest_open == 30 * 60.0  # 07:30 to its expiry at 08:00
    assert (api.last_transition_from, api.last_transition_to) == (State.HALF_OPEN, State.CLOSED)
    db = found["db"]
    assert db.trips == 2 and db.reports == 0 and db.success_rate is None
    assert (db.time_open, db.longest_open) == (40 * 60.0, 30 * 60.0)  # 07:20-07:50-08:00
    idle = found["idle"]
    assert idle.state is State.HALF_OPEN and idle.trips == 1
    assert idle.time_open == 10 * 60.0  # 08:50 until the expiry at 09:00, not until 09:10
    assert found["quiet"].reports == 0 and found["quiet"].time_open == 0.0
    assert (found["search"].reports, found["search"].success_rate) == (2, 0.5)
    assert all(item.complete for item in found.values())
    for item in found.values():
        verify(brama.engine, item.identifier, item.scope)

    # idle's pending expiry (09:00): a window from 08:55 holds five minutes of its episode; one
    # from 09:05 starts half-open (the row still says open), so none.
    assert by_name(assert_all_agree(db_url, brama, at(175), at(190)))["idle"].time_open == 300.0
    late = by_name(assert_all_agree(db_url, brama, at(185), at(190)))["idle"]
    assert (late.time_open, late.trips, late.reports) == (0.0, 0, 0)

    # An episode that began before the window counts from the window's start.
    early = by_name(assert_all_agree(db_url, brama, at(20), at(190)))
    assert early["api"].time_open == 20 * 60.0 + 30 * 60.0  # 06:20-06:40, 07:30-08:00
    assert early["api"].longest_open == 30 * 60.0
    assert early["api"].trips == 1  # the 06:10 trip is before the window
    assert early["quiet"].reports == 0


def test_a_window_reaching_into_pruned_hours_is_marked_incomplete(
    db_url: URL, make_brama: Callable[..., Brama]
) -> None:
    brama = live_a_morning(make_brama)
    with freeze_time(at(195)):
        assert brama.prune(timedelta(minutes=105)) > 0  # every event before 07:30
    found = by_name(assert_all_agree(db_url, brama, at(0), at(195)))
    # Every connection lost events of the window (at least its registration at 06:00).
    assert not any(item.complete for item in found.values())
    assert found["quiet"].reports == 0  # its two successes were pruned
    assert found["search"].reports == 2  # after the cutoff: still logged
    # Pruned hours are told by the hour: a window from 07:40 overlaps db's 07:00 rollup (its
    # manual open at 07:20 was pruned), not search's 06:00 one.
    hourly = by_name(assert_all_agree(db_url, brama, at(100), at(195)))
    assert not hourly["db"].complete and hourly["search"].complete
    later = by_name(assert_all_agree(db_url, brama, at(125), at(195)))
    assert all(item.complete for item in later.values())
    # api's last transition (08:10) is still logged; quiet's first success at 06:05 closed it,
    # and that event was pruned: its time stays, its states are gone.
    assert found["api"].last_transition_to is State.CLOSED
    assert found["quiet"].last_transition_at == at(5)
    assert found["quiet"].last_transition_to is None
    for item in found.values():
        verify(brama.engine, item.identifier, item.scope)


def test_the_report_reads_the_window_through_indexes(
    db_url: URL, make_brama: Callable[..., Brama]
) -> None:
    brama = live_a_morning(make_brama)
    statements: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        statements.append((statement, parameters))

    event.listen(brama.engine, "before_cursor_execute", capture)
    with freeze_time(at(190)):
        brama.report(timedelta(hours=1))
    event.remove(brama.engine, "before_cursor_execute", capture)
    on_log = [sql for sql, _ in statements if "brama_events" in sql]
    assert len(on_log) == 3
    # Each read of the log is bounded: by the window's start, or by the row's last transition.
    for sql in on_log:
        assert "occurred_at >=" in sql or "brama_connections.last_transition_at" in sql, sql
    if db_url.get_backend_name() == "sqlite":
        engine = create_engine(db_url)
        with engine.connect() as conn:
            for sql, parameters in statements:
                if "brama_events" not in sql:
                    continue
                plan = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", parameters).all()
                details = [row[-1] for row in plan]
                assert not any(re.match(r"SCAN brama_events\b(?! USING)", d) for d in details), (
                    details
                )
        engine.dispose()


@pytest.mark.parametrize(
    ("since", "message"),
    [
        (datetime(2031, 9, 1, 6, 0), "timezone-aware"),
        (-5, "since"),
        (timedelta(0), "since"),
    ],
)
def test_report_refuses_bad_input(brama: Brama, since: Any, message: str) -> None:
    brama.register("svc")
    before = brama.events()
    with pytest.raises(InvalidArgumentError, match=message):
        brama.report(since)
    with pytest.raises(InvalidArgumentError):
        brama.report(3600, scope="")
    assert brama.events() == before


def test_report_scope_filter_and_table(db_url: URL, make_brama: Callable[..., Brama]) -> None:
    brama = live_a_morning(make_brama)
    with freeze_time(at(190)):
        assert [item.identifier for item in brama.report(3600, scope="shop").connections] == [
            "api",
            "db",
            "quiet",
        ]
        assert [item.identifier for item in brama.report(3600, scope=None).connections] == [
            "idle",
            "search",
        ]
        url = db_url.render_as_string(hide_password=False)
        table = CliRunner().invoke(main, ["--url", url, "report", "--since", "2h", "--scope", ""])
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    assert lines[0] == "From 2031-09-01 07:10:00+00:00 to 2031-09-01 09:10:00+00:00 (2h 00m)."
    assert re.split(r"\s{2,}", lines[1]) == [
        "SCOPE",
        "IDENTIFIER",
        "STATE",
        "REPORTS",
        "FAILED",
        "SUCCESS RATE",
        "TRIPS",
        "OPEN FOR",
        "LONGEST OPEN",
        "LAST TRANSITION",
    ]
    assert re.split(r"\s{2,}", lines[2]) == [
        "-",
        "idle",
        "half_open",
        "2",
        "2",
        "0.0%",
        "1",
        "10m 00s",
        "10m 00s",
        "closed -> open 20m 00s ago",
    ]
    bad = CliRunner().invoke(main, ["--url", url, "report", "--since", "soon"])
    assert bad.exit_code == 2 and "--since" in bad.stderr
