"""The session settings of the engines brama_sql builds, and the URL's own values winning."""

from __future__ import annotations

from sqlalchemy.engine import make_url

from brama_sql import engine as engines


def test_postgresql_gets_the_lock_wait_limit_at_connect_and_io_limits() -> None:
    arguments = engines._postgresql_arguments(make_url("postgresql+psycopg://h/db"), 2.5)
    assert arguments["options"] == "-c lock_timeout=2500"
    assert arguments["connect_timeout"] == engines.CONNECT_TIMEOUT_S
    assert arguments["tcp_user_timeout"] == engines.IO_TIMEOUT_S * 1000
    assert arguments["keepalives"] == 1


def test_postgresql_url_parameters_win_and_options_are_kept() -> None:
    url = make_url(
        "postgresql+psycopg://h/db?keepalives_idle=20&tcp_user_timeout=1000"
        "&connect_timeout=9&options=-c%20search_path%3Dapp"
    )
    arguments = engines._postgresql_arguments(url, 1)
    for name in ("keepalives_idle", "tcp_user_timeout", "connect_timeout"):
        assert name not in arguments, f"the URL's {name} is left to the URL"
    assert arguments["options"] == "-c search_path=app -c lock_timeout=1000"


def test_mysql_gets_the_lock_wait_limit_in_whole_seconds_and_io_limits() -> None:
    arguments = engines._mysql_arguments(make_url("mysql+pymysql://h/db"), 0.2)
    assert arguments["init_command"] == "SET SESSION innodb_lock_wait_timeout = 1"
    assert arguments["read_timeout"] == arguments["write_timeout"] == engines.IO_TIMEOUT_S
    url = make_url("mysql+pymysql://h/db?init_command=SET+SESSION+x%3D1&read_timeout=3")
    arguments = engines._mysql_arguments(url, 2.5)
    assert "init_command" not in arguments and "read_timeout" not in arguments
    assert arguments["write_timeout"] == engines.IO_TIMEOUT_S


def test_limits_are_rounded_to_what_each_database_takes() -> None:
    assert engines.milliseconds(0.0001) == 1
    assert engines.milliseconds(2.5) == 2500
    assert engines.whole_seconds(0.2) == 1
    assert engines.whole_seconds(2.1) == 3
