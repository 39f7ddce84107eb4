"""The command line on bad URLs and mistyped SQLite paths: one line on stderr, never a
password, exit code 2 for a URL it cannot use; commands that only use an existing database
never create an SQLite file."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from brama_sql.cli import main

SECRET = "s3cr3t-Pa55"
BAD_URLS = {
    "port-not-a-number": f"postgresql+psycopg://user:{SECRET}@db.example:notaport/app",
    "port-out-of-range": f"postgresql+psycopg://user:{SECRET}@db.example:70000/app",
    "unknown-driver": f"postgresql+nosuchdriver://user:{SECRET}@db.example/app",
    "unknown-dialect": f"nosuchdialect://user:{SECRET}@db.example/app",
    "garbage": f"user:{SECRET} at db.example",
}
EXISTING_ONLY = [
    ["status"],
    ["status", "--json"],
    ["events"],
    ["verify"],
    ["cleanup"],
    ["configure", "db", "--expiry", "5"],
]
"""Commands that need an existing database (all but ``migrate`` and ``demo``)."""


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), env=env)


def assert_one_line_error(result: Result, exit_code: int) -> str:
    assert result.exit_code == exit_code, result.output
    assert result.stdout == ""
    message = result.stderr.strip()
    assert message.startswith("Error: ") and "\n" not in message, "one line, no traceback"
    return message


@pytest.mark.parametrize("url", BAD_URLS.values(), ids=BAD_URLS.keys())
@pytest.mark.parametrize("given", ["option", "environment"])
def test_a_bad_url_is_one_line_exit_2_and_never_shows_the_password(url: str, given: str) -> None:
    if given == "option":
        result = invoke("--url", url, "status")
    else:
        result = invoke("status", env={"BRAMA_SQL_URL": url})
    message = assert_one_line_error(result, 2)
    assert "--url" in message
    assert SECRET not in result.output


@pytest.mark.parametrize("command", EXISTING_ONLY, ids=" ".join)
def test_a_mistyped_sqlite_path_is_an_error_and_creates_no_file(
    tmp_path: Path, command: list[str]
) -> None:
    path = tmp_path / "typo.db"
    result = invoke("--url", f"sqlite:///{path}", *command)
    message = assert_one_line_error(result, 1)
    assert str(path) in message and "brama-sql migrate" in message
    assert list(tmp_path.iterdir()) == [], "no file was created"


def test_migrate_creates_the_sqlite_file_and_the_other_commands_then_work(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'new.db'}"
    assert invoke("--url", url, "migrate").exit_code == 0
    assert (tmp_path / "new.db").exists()
    for command in EXISTING_ONLY[:4]:
        result = invoke("--url", url, *command)
        assert result.exit_code == 0, result.output
