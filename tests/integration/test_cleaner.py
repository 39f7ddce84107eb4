"""The in-process periodic cleanup: a daemon thread running ``brama.cleanup()`` until stopped.

Connections become inactive by moving a freezegun clock, never by sleeping; the tests only poll
(bounded) for the cleaner thread to have done its work.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import pytest
from freezegun import freeze_time
from sqlalchemy.engine import URL

from brama_sql import ArgumentTypeError, Brama, InvalidArgumentError, Kind, SchemaError
from brama_sql.cleaner import Cleaner

START = datetime(2031, 3, 1, 9, 0, tzinfo=timezone.utc)
TINY_INTERVAL = 0.01
POLL_SECONDS = 0.01
WAIT_LIMIT_SECONDS = 5.0


def wait_until(condition: Callable[[], bool], limit: float = WAIT_LIMIT_SECONDS) -> bool:
    """Poll ``condition`` until it holds or ``limit`` seconds of polls have passed.

    Counts polls instead of reading a clock, because freezegun has stopped the test's clock.
    """
    pause = threading.Event()
    for _ in range(int(limit / POLL_SECONDS)):
        if condition():
            return True
        pause.wait(POLL_SECONDS)
    return condition()


def test_cleaner_removes_inactive_connections_and_spares_fresh_ones(
    make_brama: Callable[..., Brama],
) -> None:
    with freeze_time(START) as frozen:
        brama = make_brama(inactive_after=60)
        brama.register("db")
        brama.register("db", scope="orders")
        brama.failure("db", scope="orders", reason="timeout")
        frozen.tick(timedelta(seconds=61))
        brama.register("fresh")

        with Cleaner(brama, interval=TINY_INTERVAL) as cleaner:
            assert cleaner.is_running
            assert wait_until(lambda: [c.identifier for c in brama.connections()] == ["fresh"])
            runs_when_removed = cleaner.runs
            # Later runs keep sparing the fresh connection.
            assert wait_until(lambda: cleaner.runs >= runs_when_removed + 3)
            assert [c.identifier for c in brama.connections()] == ["fresh"]

    assert not cleaner.is_running
    assert cleaner.removed == 2
    for scope in (None, "orders"):
        history = brama.events("db", scope=scope)
        assert history[-1].kind is Kind.REMOVED
        assert history[-1].occurred_at == START + timedelta(seconds=61)


def test_stop_ends_the_thread_without_waiting_for_the_interval(brama: Brama) -> None:
    cleaner = Cleaner(brama, interval=timedelta(hours=1)).start()
    assert cleaner.is_running
    thread = cleaner._thread
    assert thread is not None and thread.daemon

    cleaner.stop(timeout=WAIT_LIMIT_SECONDS)

    assert not thread.is_alive()
    assert not cleaner.is_running
    assert cleaner.runs == 0, "the first run is one interval after start"


def test_a_stopped_cleaner_can_be_started_again(make_brama: Callable[..., Brama]) -> None:
    with freeze_time(START) as frozen:
        brama = make_brama(inactive_after=10)
        cleaner = Cleaner(brama, interval=TINY_INTERVAL)
        cleaner.start()
        assert cleaner.start() is cleaner, "start() on a running cleaner changes nothing"
        cleaner.stop()
        assert not cleaner.is_running

        brama.register("db")
        frozen.tick(timedelta(seconds=11))
        with cleaner:
            assert wait_until(lambda: brama.connections() == [])
    assert not cleaner.is_running
    assert cleaner.removed == 1


def test_an_error_in_one_run_is_logged_and_the_thread_keeps_running(
    blank_url: URL, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="brama_sql")
    brama = Brama(blank_url.render_as_string(hide_password=False), inactive_after=60)
    try:
        with freeze_time(START) as frozen:
            with Cleaner(brama, interval=TINY_INTERVAL) as cleaner:
                # The tables do not exist yet: every run fails with SchemaError.
                assert wait_until(lambda: cleaner.runs >= 2)
                failures = [r for r in caplog.records if r.name == "brama_sql"]
                assert failures, "a failed run must be logged"
                assert failures[0].levelno == logging.ERROR
                assert failures[0].exc_info is not None
                assert isinstance(failures[0].exc_info[1], SchemaError)
                assert "cleanup failed" in failures[0].getMessage()
                assert cleaner.is_running

                # Once the schema exists, the same thread does its work.
                brama.migrate()
                brama.register("db")
                frozen.tick(timedelta(seconds=61))
                assert wait_until(lambda: brama.connections() == [])
                assert cleaner.is_running
            assert cleaner.removed == 1
    finally:
        brama.dispose()


def test_run_once_returns_the_count_and_logs_removals(
    make_brama: Callable[..., Brama], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="brama_sql")
    with freeze_time(START) as frozen:
        brama = make_brama(inactive_after=5)
        brama.register("a")
        brama.register("b")
        frozen.tick(timedelta(seconds=6))
        cleaner = Cleaner(brama, interval=60)

        assert cleaner.run_once() == 2
        assert cleaner.run_once() == 0

    assert (cleaner.runs, cleaner.removed) == (2, 2)
    assert not cleaner.is_running, "run_once works in the calling thread"
    assert any("removed 2 inactive" in r.getMessage() for r in caplog.records)


def test_interval_is_validated(brama: Brama) -> None:
    assert Cleaner(brama, timedelta(minutes=2)).interval == 120.0
    assert Cleaner(brama, 1).interval == 1.0
    for bad in (0, -1, float("nan"), float("inf"), timedelta(0)):
        with pytest.raises(InvalidArgumentError, match="interval"):
            Cleaner(brama, bad)
    for wrong in ("5", None, True):
        with pytest.raises(ArgumentTypeError, match="interval"):
            Cleaner(brama, wrong)  # type: ignore[arg-type]
    with pytest.raises(ArgumentTypeError, match="brama"):
        Cleaner(object(), 1)  # type: ignore[arg-type]
