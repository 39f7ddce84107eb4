"""Declared connections: registered by the first call that needs them (also after cleanup
removed them), exactly once across processes; stored options compared with declared ones once
per process; ``register(exist_ok=True)`` names the options it ignores."""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import fleet_workers
import pytest
from freezegun import freeze_time
from sqlalchemy.engine import URL

from brama_sql import (
    ArgumentTypeError,
    Brama,
    InvalidArgumentError,
    Kind,
    NotRegisteredError,
    State,
)

START = datetime(2031, 3, 1, 9, 0, tzinfo=timezone.utc)
DECLARED = {"payments-api": {"scope": "payments", "failure_threshold": 3, "expiry": 30.0}}
LogCheck = Callable[..., Any]
MakeBrama = Callable[..., Brama]


def _kinds(brama: Brama, identifier: str = "payments-api") -> list[Kind]:
    return [event.kind for event in brama.events(identifier)]


def test_a_declared_connection_comes_back_after_cleanup_removed_it(
    make_brama: MakeBrama, assert_log_explains_row: LogCheck
) -> None:
    with freeze_time(START) as frozen:
        brama = make_brama(connections=DECLARED, inactive_after=3600)
        assert brama.available("payments-api", scope="payments") is True
        frozen.move_to(START + timedelta(hours=2))
        assert brama.cleanup() == 1
        assert _kinds(brama) == [Kind.REGISTERED, Kind.REMOVED]

        assert brama.available("payments-api", scope="payments") is True
        for _ in range(3):
            brama.failure("payments-api", scope="payments", reason="timeout")
        status = brama.status("payments-api", scope="payments")
    assert status.state is State.OPEN
    assert status.total_failures == 3
    assert status.failure_threshold == 3
    assert status.expiry == 30.0
    registered = [event for event in brama.events("payments-api") if event.kind is Kind.REGISTERED]
    assert [event.reason for event in registered] == ["declared", "declared"]
    assert registered[-1].actor == brama.actor()
    assert registered[-1].details == {
        "settings": {
            "failure_threshold": 3,
            "expiry": 30.0,
            "half_open_max_calls": None,
            "probe_timeout": None,
        }
    }
    assert_log_explains_row(brama, "payments-api", "payments")


FIRST_CALLS: dict[str, Callable[[Brama], object]] = {
    "available": lambda b: b.available("svc"),
    "success": lambda b: b.success("svc"),
    "failure": lambda b: b.failure("svc"),
    "status": lambda b: b.status("svc"),
    "open": lambda b: b.open("svc"),
    "close": lambda b: b.close("svc"),
    "reset": lambda b: b.reset("svc"),
    "configure": lambda b: b.configure("svc", expiry=9.0),
}


@pytest.mark.parametrize("call", sorted(FIRST_CALLS))
def test_the_first_call_registers_a_declared_connection_in_its_own_transaction(
    make_brama: MakeBrama, call: str, assert_log_explains_row: LogCheck
) -> None:
    brama = make_brama()
    brama.declare("svc", failure_threshold=7, metadata={"owner": "team-a"})
    FIRST_CALLS[call](brama)
    status = brama.status("svc")
    assert status.failure_threshold == 7
    assert status.metadata == {"owner": "team-a"}
    logged = brama.events("svc")
    assert logged[0].kind is Kind.REGISTERED and logged[0].reason == "declared"
    assert sum(event.kind is Kind.REGISTERED for event in logged) == 1
    assert_log_explains_row(brama, "svc")


def test_an_undeclared_unregistered_connection_keeps_todays_answers(
    make_brama: MakeBrama, row_counts: Callable[[Brama], tuple[int, int]]
) -> None:
    brama = make_brama(connections=DECLARED)
    assert brama.available("other") is False
    with pytest.raises(NotRegisteredError):
        brama.failure("other")
    with pytest.raises(NotRegisteredError):
        brama.status("other")
    # The declared identifier in another scope is another connection, and undeclared.
    assert brama.available("payments-api") is False
    assert row_counts(brama) == (0, 0)


def test_unregister_of_a_declared_connection_is_undone_by_its_next_use(
    make_brama: MakeBrama,
) -> None:
    brama = make_brama(connections={"svc": {}})
    brama.failure("svc")
    assert brama.unregister("svc") is True
    assert brama.status("svc").total_failures == 0
    assert _kinds(brama, "svc") == [
        Kind.REGISTERED,
        Kind.FAILURE,
        Kind.TRANSITION,
        Kind.UNREGISTERED,
        Kind.REGISTERED,
    ]


@pytest.mark.slow
def test_a_declared_connection_is_registered_exactly_once_by_a_racing_fleet(
    make_brama: MakeBrama, db_url: URL, assert_log_explains_row: LogCheck
) -> None:
    url = db_url.render_as_string(hide_password=False)
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(4)
    results = context.Queue()
    workers = [
        context.Process(
            target=fleet_workers.report_on_declared, args=(url, "svc", 25, barrier, results)
        )
        for _ in range(4)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    assert [worker.exitcode for worker in workers] == [0] * 4
    assert sorted(results.get(timeout=5) for _ in workers) == [25] * 4
    brama = make_brama()
    assert _kinds(brama, "svc").count(Kind.REGISTERED) == 1
    status = brama.status("svc")
    assert status.total_failures == 100
    assert status.failure_count == 100
    assert_log_explains_row(brama, "svc")


def test_stored_options_that_differ_are_named_once_and_kept(
    make_brama: MakeBrama, caplog: pytest.LogCaptureFixture
) -> None:
    make_brama().register("payments-api", scope="payments", failure_threshold=5, expiry=30.0)
    brama = make_brama(connections=DECLARED)
    with caplog.at_level(logging.WARNING, logger="brama_sql"):
        assert brama.available("payments-api", scope="payments") is True
        brama.success("payments-api", scope="payments")
    warnings = [record.getMessage() for record in caplog.records]
    assert len(warnings) == 1, warnings
    assert "failure_threshold 5 -> 3" in warnings[0]
    assert "expiry" not in warnings[0]
    assert "reconfigure=True" in warnings[0]
    assert brama.status("payments-api", scope="payments").failure_threshold == 5
    assert Kind.CONFIGURED not in _kinds(brama)


def test_reconfigure_applies_declared_options_once_across_instances(
    make_brama: MakeBrama, assert_log_explains_row: LogCheck
) -> None:
    make_brama().register("payments-api", scope="payments", failure_threshold=5, expiry=30.0)
    first = make_brama(connections=DECLARED, reconfigure=True)
    second = make_brama(connections=DECLARED, reconfigure=True)
    for brama in (first, second, first):
        brama.failure("payments-api", scope="payments")
    configured = [event for event in first.events("payments-api") if event.kind is Kind.CONFIGURED]
    assert len(configured) == 1
    assert configured[0].details == {
        "old": {"failure_threshold": 5},
        "new": {"failure_threshold": 3},
    }
    assert configured[0].actor == first.actor()
    status = first.status("payments-api", scope="payments")
    assert status.failure_threshold == 3
    assert status.state is State.OPEN  # the third failure reached the new threshold
    assert_log_explains_row(first, "payments-api", "payments")


def test_register_exist_ok_names_the_options_it_keeps(
    brama: Brama, caplog: pytest.LogCaptureFixture
) -> None:
    brama.register("svc", failure_threshold=5, metadata={"a": 1})
    with caplog.at_level(logging.WARNING, logger="brama_sql"):
        brama.register("svc", failure_threshold=5, metadata={"a": 1}, exist_ok=True)
        assert caplog.records == []
        kept = brama.register("svc", failure_threshold=8, metadata={"a": 2}, exist_ok=True)
    assert kept.failure_threshold == 5
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert "failure_threshold 5 -> 8" in record.getMessage()
    assert "metadata" in record.getMessage()
    assert "configure()" in record.getMessage()


@pytest.mark.parametrize(
    ("connections", "error", "match"),
    [
        (["svc"], ArgumentTypeError, "connections must be a mapping"),
        ({"svc": 3}, ArgumentTypeError, "must be a mapping of options"),
        ({"": {}}, InvalidArgumentError, "identifier must not be empty"),
        ({"svc": {"threshold": 3}}, InvalidArgumentError, "unknown options threshold"),
        ({"svc": {"failure_threshold": 0}}, InvalidArgumentError, "failure_threshold"),
        ({"svc": {"expiry": "soon"}}, ArgumentTypeError, "expiry"),
        ({"svc": {"metadata": {"x": {1, 2}}}}, InvalidArgumentError, "metadata"),
        ({"svc": {"scope": ""}}, InvalidArgumentError, "scope"),
    ],
)
def test_bad_declarations_are_refused_before_anything_is_written(
    make_brama: MakeBrama,
    row_counts: Callable[[Brama], tuple[int, int]],
    connections: Any,
    error: type[Exception],
    match: str,
) -> None:
    with pytest.raises(error, match=match):
        make_brama(connections=connections)
    with pytest.raises(error, match=match):
        make_brama(reconfigure=True, connections=connections)
    assert row_counts(make_brama()) == (0, 0)


def test_reconfigure_must_be_a_bool(make_brama: MakeBrama) -> None:
    with pytest.raises(ArgumentTypeError, match="reconfigure must be a bool"):
        make_brama(reconfigure="yes")


def test_an_explicit_configure_is_not_undone_by_the_declaration(make_brama: MakeBrama) -> None:
    brama = make_brama(connections={"svc": {"failure_threshold": 5}}, reconfigure=True)
    brama.configure("svc", failure_threshold=2)
    brama.failure("svc")
    assert brama.status("svc").failure_threshold == 2
    assert _kinds(brama, "svc").count(Kind.CONFIGURED) == 1
