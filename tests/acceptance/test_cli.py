"""The ``brama-sql`` command line, end to end on real databases.

Commands run in-process through click's ``CliRunner`` (so freezegun drives the clock), on every
dialect where the command does not depend on one; the demo also runs once as the installed
console script in a subprocess, which is the only place a test waits in real time.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import fields
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from freezegun import freeze_time
from sqlalchemy import create_engine, update
from sqlalchemy.engine import URL

from brama_sql import Brama, ConnectionStatus, Event, State
from brama_sql import demo as tour
from brama_sql.cli import Runtime, main
from brama_sql.migration import current, head
from brama_sql.schema import connections

START = datetime(2031, 6, 1, 8, 0, tzinfo=timezone.utc)
TRANSITIONS_OF_THE_DEMO = [
    "unknown -> closed",
    "closed -> open",
    "open -> half_open",
    "half_open -> closed",
]


def url_text(url: URL) -> str:
    """The URL as the command line takes it (with its password, if any)."""
    return url.render_as_string(hide_password=False)


def invoke(url: URL | str, *args: str, runtime: Runtime | None = None) -> Result:
    """Run ``brama-sql --url URL ARGS...`` in-process."""
    target = url if isinstance(url, str) else url_text(url)
    return CliRunner().invoke(main, ["--url", target, *args], obj=runtime)


def frozen_sleep(frozen: Any) -> Runtime:
    """A runtime whose demo 'sleeps' by moving the frozen clock."""

    def sleep(seconds: float) -> None:
        frozen.tick(timedelta(seconds=seconds))

    return Runtime(sleep=sleep)


def table(output: str) -> tuple[str, list[str]]:
    """The header line and the data lines of a printed table."""
    lines = [line for line in output.splitlines() if line.strip()]
    return lines[0], lines[1:]


def cells(line: str) -> list[str]:
    """A table line split at runs of two or more spaces."""
    return re.split(r"\s{2,}", line.strip())


@pytest.fixture
def open_brama(db_url: URL) -> Iterator[Brama]:
    """A Brama on the test's migrated database, for arranging what the commands then show."""
    brama = Brama(url_text(db_url))
    yield brama
    brama.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """An SQLite file for tests of the embedded default (not migrated)."""
    return f"sqlite:///{tmp_path / 'cli.db'}"


# -- migrate ----------------------------------------------------------------------------------


def test_migrate_creates_the_schema_and_is_idempotent(blank_url: URL) -> None:
    first = invoke(blank_url, "migrate")
    assert first.exit_code == 0, first.output
    assert f"Migrated from an empty database to revision {head()} (head)." in first.stdout

    again = invoke(blank_url, "migrate")
    assert again.exit_code == 0, again.output
    assert again.stdout.strip() == f"Already at revision {head()} (head)."

    engine = create_engine(blank_url)
    try:
        with engine.connect() as connection:
            assert current(connection) == head()
    finally:
        engine.dispose()


@pytest.mark.parametrize("command", [["status"], ["events"], ["cleanup"], ["status", "--json"]])
def test_commands_on_an_unmigrated_database_ask_to_migrate(
    blank_url: URL, command: list[str]
) -> None:
    result = invoke(blank_url, *command)

    assert result.exit_code == 1
    assert result.stdout == ""
    message = result.stderr.strip()
    assert "\n" not in message, "one line, no traceback"
    assert message.startswith("Error: ")
    assert "brama-sql migrate" in message
    assert "Traceback" not in result.output


# -- status -----------------------------------------------------------------------------------


def test_status_prints_an_aligned_table_of_every_connection(db_url: URL, open_brama: Brama) -> None:
    with freeze_time(START) as frozen:
        open_brama.register("db")
        open_brama.register("payments-api", scope="payments", failure_threshold=2, expiry=3600)
        open_brama.register("search", scope="catalog")
        open_brama.success("db")
        open_brama.success("payments-api", scope="payments")
        open_brama.failure("payments-api", scope="payments", reason="timeout")
        open_brama.failure("payments-api", scope="payments", reason="timeout")
        frozen.tick(timedelta(seconds=125))

        result = invoke(db_url, "status")

    assert result.exit_code == 0, result.output
    header, lines = table(result.stdout)
    assert cells(header) == [
        "SCOPE",
        "IDENTIFIER",
        "STATE",
        "FAILURES",
        "SUCCESSES",
        "FAILED",
        "SUCCESS RATE",
        "IN STATE FOR",
    ]
    rows = [cells(line) for line in lines if not line.startswith("FAILURES:")]
    # Ordered by scope (unscoped first), then identifier.
    assert rows == [
        ["-", "db", "closed", "0/5", "1", "0", "100.0%", "2m 05s"],
        ["catalog", "search", "unknown", "0/5", "0", "0", "-", "2m 05s"],
        ["payments", "payments-api", "open", "2/2", "1", "2", "33.3%", "2m 05s"],
    ]
    # Aligned: every line's STATE column starts where the header's does.
    state_column = header.index("STATE")
    for line, row in zip(lines, rows, strict=False):
        assert line.index(row[2]) == state_column


def test_status_json_has_every_field_of_every_connection(db_url: URL, open_brama: Brama) -> None:
    with freeze_time(START) as frozen:
        open_brama.register("db", metadata={"host": "db-1", "port": 5432})
        open_brama.register("cache", scope="web", expiry=30)
        open_brama.failure("cache", scope="web", reason="refused")
        frozen.tick(timedelta(seconds=3))
        expected = {(s.identifier, s.scope): s for s in open_brama.connections()}

        result = invoke(db_url, "status", "--json")

    assert result.exit_code == 0, result.output
    listed = json.loads(result.stdout)
    assert [(item["identifier"], item["scope"]) for item in listed] == [
        ("db", None),
        ("cache", "web"),
    ]
    names = {field.name for field in fields(ConnectionStatus)}
    for item in listed:
        assert set(item) == names
        status = expected[(item["identifier"], item["scope"])]
        for name in names:
            value = getattr(status, name)
            if isinstance(value, datetime):
                assert datetime.fromisoformat(item[name]) == value, name
            elif name != "time_since_state_change":
                assert item[name] == value, name
    db, cache = listed
    assert db["state"] == "unknown"
    assert db["metadata"] == {"host": "db-1", "port": 5432}
    assert db["success_rate"] is None and db["last_failure_time"] is None
    assert cache["state"] == "closed" and cache["failure_count"] == 1
    assert cache["expiry"] == 30.0 and cache["success_rate"] == 0.0
    assert cache["time_since_state_change"] == pytest.approx(3.0)
    assert datetime.fromisoformat(cache["last_failure_time"]) == START
    assert cache["last_failure_time"].endswith("+00:00")


def test_status_of_an_empty_database(db_url: URL) -> None:
    result = invoke(db_url, "status")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "No connections registered."
    as_json = invoke(db_url, "status", "--json")
    assert json.loads(as_json.stdout) == []


def test_the_url_comes_from_the_environment(db_url: URL, open_brama: Brama) -> None:
    open_brama.register("from-env")
    result = CliRunner().invoke(main, ["status"], env={"BRAMA_SQL_URL": url_text(db_url)})
    assert result.exit_code == 0, result.output
    assert "from-env" in result.stdout


def test_the_default_url_is_brama_db_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BRAMA_SQL_URL", raising=False)
    runner = CliRunner()
    result = runner.invoke(main, ["migrate"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "brama.db").is_file()
    usage = runner.invoke(main, ["--help"]).stdout
    assert usage.startswith("Usage: brama-sql ")
    assert "BRAMA_SQL_URL" in usage and "sqlite:///brama.db" in usage


# -- events -----------------------------------------------------------------------------------


def arrange_history(brama: Brama) -> None:
    """Three connections named "db" (unscoped, scope a, scope b) and one other, with reports."""
    brama.register("db")
    brama.register("db", scope="a", failure_threshold=2)
    brama.register("db", scope="b")
    brama.register("other", scope="a")
    brama.success("db")
    brama.failure("db", scope="a", reason="timeout")
    brama.failure("db", scope="a", reason="refused")
    brama.success("db", scope="b")


def test_events_lists_the_log_oldest_first_with_filters(db_url: URL, open_brama: Brama) -> None:
    with freeze_time(START):
        arrange_history(open_brama)

    everything = invoke(db_url, "events")
    assert everything.exit_code == 0, everything.output
    header, lines = table(everything.stdout)
    assert cells(header) == [
        "ID",
        "OCCURRED AT",
        "SCOPE",
        "IDENTIFIER",
        "KIND",
        "CHANGE",
        "FAILURES",
        "REASON",
    ]
    logged = open_brama.events()
    assert [int(cells(line)[0]) for line in lines] == [event.id for event in logged]
    assert [cells(line)[4] for line in lines] == [event.kind.value for event in logged]

    scope_a = invoke(db_url, "events", "db", "--scope", "a")
    rows = [cells(line) for line in table(scope_a.stdout)[1]]
    assert {(row[2], row[3]) for row in rows} == {("a", "db")}
    assert [row[4] for row in rows] == [
        "registered",
        "failure",
        "transition",
        "failure",
        "transition",
    ]
    assert rows[2][5] == "unknown -> closed"
    assert rows[4][5:] == ["closed -> open", "2", "failure threshold reached"]
    assert rows[3][7] == "refused"
    assert scope_a.stdout.index("unknown -> closed") < scope_a.stdout.index("closed -> open")

    unscoped = invoke(db_url, "events", "--scope", "")
    assert {cells(line)[2] for line in table(unscoped.stdout)[1]} == {"-"}

    every_db = invoke(db_url, "events", "db")
    assert {cells(line)[2] for line in table(every_db.stdout)[1]} == {"-", "a", "b"}

    first_two = invoke(db_url, "events", "--limit", "2")
    assert [int(cells(line)[0]) for line in table(first_two.stdout)[1]] == [
        event.id for event in logged[:2]
    ]

    nothing = invoke(db_url, "events", "missing")
    assert nothing.exit_code == 0
    assert nothing.stdout.strip() == "No events."


def test_events_json_has_every_field(db_url: URL, open_brama: Brama) -> None:
    with freeze_time(START):
        arrange_history(open_brama)
        expected = open_brama.events("db", scope="a")

    result = invoke(db_url, "events", "db", "--scope", "a", "--json")

    assert result.exit_code == 0, result.output
    listed = json.loads(result.stdout)
    names = {field.name for field in fields(Event)}
    assert [set(item) for item in listed] == [names] * len(expected)
    assert [item["id"] for item in listed] == [event.id for event in expected]
    for item, event in zip(listed, expected, strict=True):
        assert datetime.fromisoformat(item["occurred_at"]) == event.occurred_at == START
        assert item["kind"] == event.kind.value
        assert (item["identifier"], item["scope"]) == ("db", "a")
    trip = listed[-1]
    assert (trip["kind"], trip["from_state"], trip["to_state"]) == ("transition", "closed", "open")
    assert trip["cause"] == "report" and trip["failure_count"] == 2
    assert listed[0]["from_state"] is None and listed[0]["kind"] == "registered"

    limited = json.loads(invoke(db_url, "events", "--limit", "1", "--json").stdout)
    assert len(limited) == 1 and limited[0]["kind"] == "registered"


def test_events_rejects_a_negative_limit(db_url: URL) -> None:
    result = invoke(db_url, "events", "--limit", "-1")
    assert result.exit_code == 2
    assert "--limit" in result.stderr


# -- cleanup ----------------------------------------------------------------------------------


def test_cleanup_prints_how_many_connections_it_removed(db_url: URL, open_brama: Brama) -> None:
    with freeze_time(START) as frozen:
        open_brama.register("old")
        open_brama.register("old", scope="x")
        frozen.tick(timedelta(seconds=100))
        open_brama.register("fresh")

        by_default = invoke(db_url, "cleanup")
        assert by_default.exit_code == 0, by_default.output
        assert by_default.stdout.strip() == "Removed 0 inactive connections."

        result = invoke(db_url, "cleanup", "--inactive-after", "60")
        assert result.exit_code == 0, result.output
        assert result.stdout.strip() == "Removed 2 inactive connections."
        assert [status.identifier for status in open_brama.connections()] == ["fresh"]

        frozen.tick(timedelta(seconds=61))
        single = invoke(db_url, "cleanup", "--inactive-after", "60")
        assert single.stdout.strip() == "Removed 1 inactive connection."
    assert open_brama.events("old")[-1].kind.value == "removed"


def test_cleanup_rejects_a_bad_inactive_after(db_url: URL) -> None:
    result = invoke(db_url, "cleanup", "--inactive-after", "0")
    assert result.exit_code == 1
    assert "inactive_after" in result.stderr
    assert "Traceback" not in result.output


# -- prune ------------------------------------------------------------------------------------


def test_prune_deletes_old_events_and_keeps_the_totals(db_url: URL, open_brama: Brama) -> None:
    with freeze_time(START) as frozen:
        open_brama.register("svc", failure_threshold=100)
        for _ in range(3):
            open_brama.failure("svc")
            open_brama.success("svc")
        old = len(open_brama.events("svc"))
        frozen.tick(timedelta(days=31))
        open_brama.success("svc")
        before = open_brama.status("svc")

        result = invoke(db_url, "prune", "--older-than", "30d")
        assert result.exit_code == 0, result.output
        assert result.stdout.strip() == f"Deleted {old} events older than 30d 00h."
        assert [event.kind.value for event in open_brama.events("svc")] == ["success"]
        assert open_brama.status("svc") == before
        assert (before.total_successes, before.total_failures) == (4, 3)

        again = invoke(db_url, "prune", "--older-than", "3600", "--batch-size", "1")
        assert again.stdout.strip() == "Deleted 0 events older than 1h 00m."
        verified = invoke(db_url, "verify")
        assert verified.exit_code == 0, verified.output


@pytest.mark.parametrize("wrong", ["0", "-1h", "30x", "d", "", "inf"])
def test_prune_rejects_a_duration_that_is_not_one(db_url: URL, wrong: str) -> None:
    result = invoke(db_url, "prune", "--older-than", wrong)
    assert result.exit_code == 2
    assert "--older-than" in result.output and "Traceback" not in result.output


# -- bad URLs ---------------------------------------------------------------------------------


def test_an_unusable_url_is_a_usage_error() -> None:
    result = invoke("nosuchdialect://x", "status")
    assert result.exit_code == 2
    assert "--url" in result.stderr and "nosuchdialect" in result.stderr


def test_an_unreachable_server_is_a_one_line_error() -> None:
    result = invoke("postgresql+psycopg://postgres@127.0.0.1:1/nothing", "status")
    assert result.exit_code == 1
    message = result.stderr.strip()
    assert message.startswith("Error: ") and "\n" not in message
    assert "database error" in message


# -- demo -------------------------------------------------------------------------------------


def assert_demo_output(output: str) -> None:
    """The demo narrates every transition in order and ends with the metrics."""
    positions = [output.index(f">> transition {change}") for change in TRANSITIONS_OF_THE_DEMO]
    assert positions == sorted(positions)
    assert "available() = False" in output
    assert "available() = True: the circuit is half_open" in output
    metrics = output[output.index("Final metrics:") :]
    assert re.search(r"state:\s+closed", metrics)
    assert re.search(r"total successes:\s+1\b", metrics)
    assert re.search(r"total failures:\s+3\b", metrics)
    assert re.search(r"success rate:\s+25\.0%", metrics)
    assert re.search(r"time since state change:\s+\d+\.\d+s", metrics)


def test_demo_trips_recovers_and_leaves_its_history(sqlite_url: str) -> None:
    with freeze_time(START) as frozen:
        result = invoke(sqlite_url, "demo", runtime=frozen_sleep(frozen))
    assert result.exit_code == 0, result.output
    assert_demo_output(result.stdout)
    assert "time since state change: 0.000s" in result.stdout

    status = invoke(sqlite_url, "status")
    row = next(cells(line) for line in status.stdout.splitlines() if "payments-api" in line)
    assert row[:7] == ["demo", "payments-api", "closed", "0/3", "1", "3", "25.0%"]

    history = invoke(sqlite_url, "events", "payments-api", "--scope", "demo", "--json")
    logged = json.loads(history.stdout)
    changes = [f"{e['from_state']} -> {e['to_state']}" for e in logged if e["kind"] == "transition"]
    assert changes == TRANSITIONS_OF_THE_DEMO
    # The expiry's transition is dated at the instant the 1 s expiry elapsed.
    opened, half_open = (
        datetime.fromisoformat(e["occurred_at"])
        for e in logged
        if e["kind"] == "transition" and e["to_state"] in ("open", "half_open")
    )
    assert half_open - opened == timedelta(seconds=tour.EXPIRY)


def test_demo_can_run_again_and_keeps_every_run_in_the_log(sqlite_url: str) -> None:
    with freeze_time(START) as frozen:
        first = invoke(sqlite_url, "demo", runtime=frozen_sleep(frozen))
        frozen.tick(timedelta(minutes=1))
        second = invoke(sqlite_url, "demo", "--expiry", "5", runtime=frozen_sleep(frozen))

    assert first.exit_code == 0, first.output
    assert second.exit_code == 0, second.output
    assert "Unregistered 'payments-api' from an earlier run" in second.stdout
    assert "Unregistered" not in first.stdout
    assert_demo_output(second.stdout)
    # The second run narrates only its own transitions.
    assert second.stdout.count(">> transition") == len(TRANSITIONS_OF_THE_DEMO)

    logged = json.loads(invoke(sqlite_url, "events", "--json").stdout)
    kinds = [event["kind"] for event in logged]
    assert kinds.count("registered") == 2 and kinds.count("unregistered") == 1
    assert kinds.count("transition") == 2 * len(TRANSITIONS_OF_THE_DEMO)
    status = json.loads(invoke(sqlite_url, "status", "--json").stdout)
    assert len(status) == 1 and status[0]["expiry"] == 5.0
    assert status[0]["total_failures"] == 3, "metrics count the current registration only"


def test_demo_runs_on_every_dialect(brama: Brama) -> None:
    narration: list[str] = []
    with freeze_time(START) as frozen:
        final = tour.run(
            brama, narration.append, sleep=lambda seconds: frozen.tick(timedelta(seconds=seconds))
        )
    assert final.state is State.CLOSED
    assert (final.total_successes, final.total_failures) == (1, 3)
    assert final.success_rate == pytest.approx(0.25)
    assert_demo_output("\n".join(narration))


def test_the_console_script_runs_the_demo(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "brama-sql"
    assert script.is_file(), f"no console script beside {sys.executable}"
    url = f"sqlite:///{tmp_path / 'demo.db'}"

    demo = subprocess.run(
        [str(script), "--url", url, "demo"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        check=False,
    )
    assert demo.returncode == 0, demo.stderr
    assert_demo_output(demo.stdout)

    status = subprocess.run(
        [str(script), "--url", url, "status"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )
    assert status.returncode == 0, status.stderr
    assert re.search(r"demo\s+payments-api\s+closed\s+0/3\s+1\s+3\s+25\.0%", status.stdout)


# -- verify -----------------------------------------------------------------------------------


def test_verify_replays_every_log_and_names_a_row_it_does_not_explain(db_url: URL) -> None:
    brama = Brama(db_url.render_as_string(hide_password=False))
    try:
        brama.register("db", failure_threshold=2)
        brama.register("db", scope="other")
        brama.failure("db")
        result = invoke(db_url, "verify")
        assert result.exit_code == 0, result.output
        assert "Checked 2 connections: 0 not explained by the log." in result.stdout
        with brama.engine.begin() as conn:
            conn.execute(
                update(connections)
                .where(connections.c.identifier == "db", connections.c.scope == "")
                .values(failure_count=7)
            )
        result = invoke(db_url, "verify")
        assert result.exit_code == 1
        assert "Checked 2 connections: 1 not explained by the log." in result.stdout
        assert "'db'" in result.stderr and "failure_count=7" in result.stderr
    finally:
        brama.dispose()


def test_configure_changes_options_and_events_show_what_changed(db_url: URL, brama: Brama) -> None:
    brama.register("svc", scope="shop", failure_threshold=5, expiry=60)
    for _ in range(3):
        brama.failure("svc", scope="shop")
    result = invoke(
        db_url,
        "configure",
        "svc",
        "--scope",
        "shop",
        "--failure-threshold",
        "3",
        "--half-open-max-calls",
        "2",
    )
    assert result.exit_code == 0, result.output
    assert result.output == (
        "'svc' in scope 'shop': failure_threshold 5 -> 3, half_open_max_calls None -> 2.\n"
    )
    status = brama.status("svc", scope="shop")
    assert (status.failure_threshold, status.half_open_max_calls) == (3, 2)
    assert status.state is State.OPEN  # three failures reach the new threshold

    again = invoke(db_url, "configure", "svc", "--scope", "shop", "--failure-threshold", "3")
    assert again.output == "'svc' in scope 'shop': nothing to change.\n"
    lifted = invoke(db_url, "configure", "svc", "--scope", "shop", "--half-open-max-calls", "none")
    assert lifted.output == "'svc' in scope 'shop': half_open_max_calls 2 -> None.\n"
    assert brama.status("svc", scope="shop").half_open_max_calls is None
    # The stored probe_timeout (None: the expiry), not the effective one, is what changes.
    timed = invoke(db_url, "configure", "svc", "--scope", "shop", "--probe-timeout", "60")
    assert timed.output == "'svc' in scope 'shop': probe_timeout None -> 60.0.\n"
    untimed = invoke(db_url, "configure", "svc", "--scope", "shop", "--probe-timeout", "none")
    assert untimed.output == "'svc' in scope 'shop': probe_timeout 60.0 -> None.\n"

    header, lines = table(invoke(db_url, "events", "svc").output)
    configured = [cells(line) for line in lines if " configured " in line]
    assert [row[5] for row in configured] == [
        "failure_threshold 5 -> 3, half_open_max_calls None -> 2",
        "half_open_max_calls 2 -> None",
        "probe_timeout None -> 60.0",
        "probe_timeout 60.0 -> None",
    ]
    assert "CHANGE" in header
    assert invoke(db_url, "verify").exit_code == 0


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["ghost", "--expiry", "3"], 1, "is not registered"),
        (["svc", "--failure-threshold", "0"], 1, "failure_threshold must be between"),
        (["svc", "--probe-timeout", "soon"], 2, "is not a number or 'none'"),
    ],
)
def test_configure_refuses_bad_input_without_writing(
    db_url: URL, brama: Brama, args: list[str], code: int, message: str
) -> None:
    brama.register("svc")
    before = brama.events()
    result = invoke(db_url, "configure", *args)
    assert result.exit_code == code
    assert message in result.output
    assert brama.events() == before
