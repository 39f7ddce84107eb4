"""``brama-sql disable|force-open|open|close|reset``, the policy options of ``configure``, and
what ``status`` shows of them; in-process through click's ``CliRunner`` on every dialect."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timezone

import pytest
from click.testing import CliRunner, Result
from freezegun import freeze_time
from sqlalchemy.engine import URL

from brama_sql import Brama, Cause, State
from brama_sql.cli import main
from brama_sql.replay import verify

START = datetime(2031, 6, 1, 8, 0, tzinfo=timezone.utc)


def invoke(url: URL, *args: str) -> Result:
    return CliRunner().invoke(main, ["--url", url.render_as_string(hide_password=False), *args])


@pytest.fixture
def brama(db_url: URL) -> Iterator[Brama]:
    made = Brama(db_url.render_as_string(hide_password=False))
    yield made
    made.dispose()


def test_forced_states_from_the_command_line(db_url: URL, brama: Brama) -> None:
    brama.register("payments-api", scope="payments")
    result = invoke(db_url, "force-open", "payments-api", "--scope", "payments", "--reason", "x")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "'payments-api' in scope 'payments': forced_open."
    assert "forced_open" in invoke(db_url, "status").stdout
    assert invoke(db_url, "disable", "payments-api", "--scope", "payments").exit_code == 0
    assert brama.status("payments-api", scope="payments").state is State.DISABLED
    assert invoke(db_url, "close", "payments-api", "--scope", "payments").exit_code == 0
    assert invoke(db_url, "open", "payments-api", "--scope", "payments").exit_code == 0
    assert invoke(db_url, "reset", "payments-api", "--scope", "payments").exit_code == 0
    causes = [e.cause for e in brama.events("payments-api") if e.cause is not None]
    assert causes == [
        Cause.FORCE_OPEN,
        Cause.DISABLE,
        Cause.MANUAL_CLOSE,
        Cause.MANUAL_OPEN,
        Cause.MANUAL_RESET,
    ]
    missing = invoke(db_url, "disable", "ghost")
    assert missing.exit_code != 0 and "ghost" in missing.output
    verify(brama.engine, "payments-api", "payments")


def test_policy_options_are_configured_and_shown(db_url: URL, brama: Brama) -> None:
    with freeze_time(START):
        brama.register("db", failure_threshold=1, expiry=10)
        result = invoke(
            db_url,
            "configure",
            "db",
            "--expiry-strategy",
            "exponential",
            "--max-expiry",
            "60",
            "--failure-rate-threshold",
            "0.5",
            "--window",
            "30",
            "--minimum-calls",
            "4",
        )
        assert result.exit_code == 0, result.output
        assert "expiry_strategy 'fixed' -> 'exponential'" in result.stdout
        brama.success("db")
        status = invoke(db_url, "status")
        listed = json.loads(invoke(db_url, "status", "--json").stdout)
    assert status.exit_code == 0, status.output
    lines = status.stdout.splitlines()
    assert lines[lines.index("POLICIES:") + 1] == (
        "  'db': backoff x2 up to 1m 00s; opens at 50% failures; "
        "window 30.0s, min 4 calls: 1 calls, 0 failed, 0 slow"
    )
    (record,) = listed
    assert record["expiry_strategy"] == "exponential" and record["max_expiry"] == 60.0
    assert (record["failure_rate_threshold"], record["window"]) == (0.5, 30.0)
    assert record["minimum_calls"] == 4 and record["window_calls"] == 1
    bad = invoke(db_url, "configure", "db", "--failure-rate-threshold", "2")
    assert bad.exit_code != 0 and "failure_rate_threshold" in bad.output
    none = invoke(db_url, "configure", "db", "--failure-rate-threshold", "none")
    assert none.exit_code == 0, none.output
    assert brama.status("db").failure_rate_threshold is None
