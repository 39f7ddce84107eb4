"""The session settings of the engines brama_sql builds, and the URL's own values winning."""

from __future__ import annotations

from sqlalchemy.engine import make_url

from brama_sql import engine as engines


def test_postgresql_gets_the_lock_limits_at_connect_and_io_limits() -> None:
    arguments = engines._postgresql_arguments(make_url("postgresql+psycopg://h/db"), 2.5, 3)
    assert arguments["options"] == (
        "-c jit=off -c TimeZone=UTC -c lock_timeout=2500 "
        "-c idle_in_transaction_session_timeout=1250 "
        "-c tcp_keepalives_idle=10 -c tcp_keepalives_interval=5 -c tcp_keepalives_count=3"
    )
    assert arguments["connect_timeout"] == 3
    assert arguments["tcp_user_timeout"] == engines.TCP_USER_TIMEOUT_S * 1000
    assert arguments["keepalives"] == 1
    # libpq reads a connect timeout of 1 s as 2 s
    assert (
        engines._postgresql_arguments(make_url("postgresql://h/db"), 1, 1)["connect_timeout"] == 2
    )


def test_postgresql_url_parameters_win_and_options_are_kept() -> None:
    url = make_url(
        "postgresql+psycopg://h/db?keepalives_idle=20&tcp_user_timeout=1000"
        "&connect_timeout=9&options=-c%20search_path%3Dapp"
    )
    arguments = engines._postgresql_arguments(url, 1, 2)
    for name in ("keepalives_idle", "tcp_user_timeout", "connect_timeout"):
        assert name not in arguments, f"the URL's {name} is left to the URL"
    assert arguments["options"].startswith(
        "-c jit=off -c TimeZone=UTC -c search_path=app -c lock_timeout=1000 "
    )
    # the URL's own jit setting comes after brama_sql's default, so it wins
    url = make_url("postgresql+psycopg://h/db?options=-c%20jit%3Don")
    options = engines._postgresql_arguments(url, 1, 2)["options"]
    assert options.index("-c jit=off") < options.index("-c jit=on")


def test_mysql_gets_the_lock_wait_limit_in_whole_seconds_and_io_limits() -> None:
    arguments = engines._mysql_arguments(make_url("mysql+pymysql://h/db"), 0.2, 2.0)
    assert arguments["init_command"] == "SET SESSION innodb_lock_wait_timeout = 1"
    # the handshake's bound; a connected session gets the call's bound plus one second
    assert arguments["connect_timeout"] == arguments["read_timeout"] == 2.0
    assert arguments["write_timeout"] == 2.0
    url = make_url("mysql+pymysql://h/db?init_command=SET+SESSION+x%3D1&read_timeout=3")
    arguments = engines._mysql_arguments(url, 2.5, 2.0)
    assert "init_command" not in arguments and "read_timeout" not in arguments
    assert arguments["write_timeout"] == 2.0


def test_limits_are_rounded_to_what_each_database_takes() -> None:
    assert engines.milliseconds(0.0001) == 1
    assert engines.milliseconds(2.5) == 2500
    assert engines.whole_seconds(0.2) == 1
    assert engines.whole_seconds(2.1) == 3


def test_an_orphaned_lock_is_released_well_within_the_lock_wait_limit() -> None:
    assert engines.orphan_lock_limit(5.0) == 2.5
    assert engines.orphan_lock_limit(0.2) == 0.2  # at least 0.2 s
