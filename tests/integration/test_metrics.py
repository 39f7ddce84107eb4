"""Metrics in status(), computed from the log, and times: aware UTC with microseconds everywhere."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from freezegun import freeze_time

from brama_sql import Brama, State

START = datetime(2024, 3, 1, 12, 34, 56, 789012, tzinfo=timezone.utc)
RowReader = Callable[..., "dict[str, Any] | None"]
LogCheck = Callable[..., Any]


def _assert_utc(moment: datetime | None) -> None:
    assert moment is not None
    assert moment.tzinfo is not None
    assert moment.utcoffset() == timedelta(0)


def test_totals_and_success_rate(brama: Brama, assert_log_explains_row: LogCheck) -> None:
    status = brama.register("db", failure_threshold=10)
    assert (status.total_successes, status.total_failures, status.success_rate) == (0, 0, None)
    assert brama.status("db").success_rate is None

    for _ in range(3):
        brama.success("db")
    status = brama.status("db")
    assert (status.total_successes, status.total_failures) == (3, 0)
    assert status.success_rate == 1.0

    brama.failure("db")
    status = brama.status("db")
    assert (status.total_successes, status.total_failures) == (3, 1)
    assert status.success_rate == pytest.approx(0.75)
    assert status.failure_count == 1
    assert_log_explains_row(brama, "db")


def test_success_rate_is_zero_with_only_failures(brama: Brama) -> None:
    brama.register("db", failure_threshold=10)
    brama.failure("db")
    brama.failure("db")
    status = brama.status("db")
    assert (status.total_successes, status.total_failures) == (0, 2)
    assert status.success_rate == 0.0


def test_manual_calls_are_not_reports(brama: Brama) -> None:
    brama.register("db")
    brama.open("db")
    brama.close("db")
    brama.reset("db")
    status = brama.status("db")
    assert (status.total_successes, status.total_failures, status.success_rate) == (0, 0, None)
    assert status.last_success_time is None
    assert status.last_failure_time is None


def test_metrics_belong_to_one_connection(brama: Brama, assert_log_explains_row: LogCheck) -> None:
    brama.register("db")
    brama.register("db", scope="eu")
    brama.register("cache")
    brama.success("db")
    brama.failure("db", scope="eu")
    brama.failure("db", scope="eu")
    assert (brama.status("db").total_successes, brama.status("db").total_failures) == (1, 0)
    eu = brama.status("db", scope="eu")
    assert (eu.total_successes, eu.total_failures) == (0, 2)
    cache = brama.status("cache")
    assert (cache.total_successes, cache.total_failures, cache.success_rate) == (0, 0, None)
    listed = {(s.identifier, s.scope): s for s in brama.connections()}
    assert listed[("db", "eu")].total_failures == 2
    assert listed[("db", None)].total_successes == 1
    assert listed[("cache", None)].success_rate is None
    for identifier, scope in (("db", None), ("db", "eu"), ("cache", None)):
        assert_log_explains_row(brama, identifier, scope)


def test_last_success_and_failure_times(brama: Brama) -> None:
    with freeze_time(START) as frozen:
        brama.register("db", failure_threshold=10)
        assert brama.status("db").last_success_time is None
        assert brama.status("db").last_failure_time is None
        frozen.tick(timedelta(seconds=1))
        brama.success("db")
        frozen.tick(timedelta(microseconds=1))
        brama.failure("db")
        frozen.tick(timedelta(seconds=2))
        brama.success("db")
        status = brama.status("db")
    assert status.last_success_time == START + timedelta(seconds=3, microseconds=1)
    assert status.last_failure_time == START + timedelta(seconds=1, microseconds=1)


def test_time_since_state_change(brama: Brama) -> None:
    with freeze_time(START) as frozen:
        brama.register("db", failure_threshold=2)
        frozen.tick(timedelta(seconds=12.5))
        status = brama.status("db")
        assert status.state_changed_at == START
        assert status.time_since_state_change == 12.5

        brama.success("db")  # unknown -> closed
        changed_at = START + timedelta(seconds=12.5)
        frozen.tick(timedelta(seconds=3, microseconds=250))
        status = brama.status("db")
        assert status.state_changed_at == changed_at
        assert status.time_since_state_change == pytest.approx(3.00025, abs=1e-9)

        brama.success("db")  # no state change: the clock keeps running
        frozen.tick(timedelta(seconds=1))
        assert brama.status("db").state_changed_at == changed_at
        assert brama.status("db").time_since_state_change == pytest.approx(4.00025, abs=1e-9)


def test_every_time_is_aware_utc_with_microseconds(
    brama: Brama, connection_row: RowReader, assert_log_explains_row: LogCheck
) -> None:
    with freeze_time(START) as frozen:
        brama.register("db", failure_threshold=2, expiry=60)
        frozen.tick(timedelta(microseconds=1))
        brama.success("db")
        frozen.tick(timedelta(microseconds=1))
        brama.failure("db")
        frozen.tick(timedelta(microseconds=1))
        brama.failure("db")
        status = brama.status("db")
        [listed] = brama.connections()
    us = timedelta(microseconds=1)
    assert status.registered_at == START
    assert status.last_success_time == START + us
    assert status.last_failure_time == START + 3 * us
    assert status.opened_at == START + 3 * us
    assert status.state_changed_at == START + 3 * us
    assert status.state is State.OPEN
    for moment in (
        status.registered_at,
        status.last_success_time,
        status.last_failure_time,
        status.opened_at,
        status.state_changed_at,
    ):
        _assert_utc(moment)
    assert listed.opened_at == status.opened_at
    assert listed.registered_at == status.registered_at
    log = brama.events("db")
    assert [event.occurred_at for event in log] == [
        START,
        START + us,
        START + us,
        START + 2 * us,
        START + 3 * us,
        START + 3 * us,
    ]
    for event in log:
        _assert_utc(event.occurred_at)
    assert [event.occurred_at.microsecond for event in log][:2] == [789012, 789013]
    row = connection_row(brama, "db", None)
    assert row is not None
    assert row["opened_at"] == START + 3 * us
    assert row["registered_at"] == START
    _assert_utc(row["opened_at"])
    assert_log_explains_row(brama, "db")


def test_a_clock_in_another_time_zone_is_stored_as_utc(
    make_brama: Callable[..., Brama],
) -> None:
    warsaw = timezone(timedelta(hours=2))
    local = datetime(2024, 6, 1, 14, 0, 0, 123456, tzinfo=warsaw)
    brama = make_brama(clock=lambda: local)
    status = brama.register("db")
    assert status.registered_at == local
    _assert_utc(status.registered_at)
    assert status.registered_at.hour == 12
    stored = brama.status("db").registered_at
    assert stored == local
    _assert_utc(stored)
    assert stored.microsecond == 123456
    [event] = brama.events("db")
    assert event.occurred_at == local
    _assert_utc(event.occurred_at)


def test_an_injected_clock_drives_every_time(make_brama: Callable[..., Brama]) -> None:
    now = [START]
    brama = make_brama(clock=lambda: now[0], failure_threshold=1, expiry=10)
    brama.register("db")
    now[0] = START + timedelta(seconds=4)
    brama.failure("db")
    status = brama.status("db")
    assert status.opened_at == START + timedelta(seconds=4)
    assert status.time_since_state_change == 0.0
    now[0] = START + timedelta(seconds=14)
    assert brama.status("db").state is State.HALF_OPEN
    assert brama.available("db") is True
