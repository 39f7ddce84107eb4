"""register(): the new connection, its options and metadata, duplicates, unknown connections."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from freezegun import freeze_time

from brama_sql import (
    AlreadyRegisteredError,
    Brama,
    BramaError,
    ConnectionStatus,
    NotRegisteredError,
    State,
)
from brama_sql.circuit import Settings

START = datetime(2024, 3, 1, 12, 34, 56, 789012, tzinfo=timezone.utc)

NESTED_METADATA: dict[str, Any] = {
    "url": "https://payments.example.com/v2",
    "owner": {"team": "billing", "oncall": ["ana", "bo"]},
    "limits": {"timeout": 2.5, "retries": 3, "enabled": True, "fallback": None},
    "tags": [],
    "levels": [[1, 2], {"deep": {"deeper": {"deepest": "zażółć 🚀"}}}],
    "empty": {},
}


def test_register_returns_an_unknown_status_with_every_field(brama: Brama) -> None:
    with freeze_time(START) as frozen:
        status = brama.register("payments-api", scope="payments", metadata={"url": "https://x"})
        assert isinstance(status, ConnectionStatus)
        assert status.identifier == "payments-api"
        assert status.scope == "payments"
        assert status.state is State.UNKNOWN
        assert status.state == "unknown"
        assert status.failure_count == 0
        assert status.last_failure_time is None
        assert status.last_success_time is None
        assert status.opened_at is None
        assert status.metadata == {"url": "https://x"}
        assert status.failure_threshold == 5
        assert status.expiry == 60.0
        assert status.registered_at == START
        assert status.state_changed_at == START
        assert status.total_successes == 0
        assert status.total_failures == 0
        assert status.success_rate is None
        assert status.time_since_state_change == 0.0
        assert status.available is True

        frozen.tick(timedelta(seconds=3))
        again = brama.status("payments-api", scope="payments")
        assert again.registered_at == START
        assert again.time_since_state_change == 3.0
        assert again == replace(status, time_since_state_change=3.0)


def test_register_logs_one_registered_event(brama: Brama) -> None:
    with freeze_time(START):
        brama.register("db")
    [event] = brama.events("db", scope=None)
    assert event.kind == "registered"
    assert event.identifier == "db"
    assert event.scope is None
    assert event.occurred_at == START
    assert event.from_state is None
    assert event.to_state is None
    assert event.failure_count == 0


def test_a_new_connection_is_available(brama: Brama) -> None:
    brama.register("db")
    assert brama.available("db") is True


def test_metadata_round_trips_nested_json(
    brama: Brama, assert_log_explains_row: Callable[..., Any]
) -> None:
    returned = brama.register("db", metadata=NESTED_METADATA)
    assert returned.metadata == NESTED_METADATA
    read_back = brama.status("db")
    assert read_back.metadata == NESTED_METADATA
    assert isinstance(read_back.metadata["limits"]["timeout"], float)
    assert read_back.metadata["limits"]["enabled"] is True
    assert read_back.metadata["limits"]["fallback"] is None
    [listed] = brama.connections()
    assert listed.metadata == NESTED_METADATA
    assert_log_explains_row(brama, "db")


def test_metadata_defaults_to_an_empty_dict(brama: Brama) -> None:
    assert brama.register("db").metadata == {}
    assert brama.status("db").metadata == {}


def test_constructor_defaults_apply_to_registrations(make_brama: Callable[..., Brama]) -> None:
    brama = make_brama(failure_threshold=7, expiry=30)
    status = brama.register("db")
    assert status.failure_threshold == 7
    assert status.expiry == 30.0
    assert isinstance(status.expiry, float)
    assert brama.status("db").failure_threshold == 7
    assert brama.status("db").expiry == 30.0


def test_constructor_expiry_as_timedelta(make_brama: Callable[..., Brama]) -> None:
    brama = make_brama(expiry=timedelta(minutes=2, milliseconds=500))
    assert brama.register("db").expiry == 120.5
    assert brama.status("db").expiry == 120.5


def test_per_connection_options_override_the_defaults(make_brama: Callable[..., Brama]) -> None:
    brama = make_brama(failure_threshold=7, expiry=30)
    custom = brama.register("custom", failure_threshold=2, expiry=12.25)
    default = brama.register("default")
    assert (custom.failure_threshold, custom.expiry) == (2, 12.25)
    assert (default.failure_threshold, default.expiry) == (7, 30.0)
    assert brama.status("custom").failure_threshold == 2
    assert brama.status("custom").expiry == 12.25
    brama.failure("custom")
    brama.failure("custom")
    assert brama.status("custom").state is State.OPEN


def test_per_connection_expiry_as_timedelta(brama: Brama) -> None:
    status = brama.register("db", expiry=timedelta(seconds=90, microseconds=250_000))
    assert status.expiry == 90.25
    assert brama.status("db").expiry == 90.25


def test_register_a_second_time_raises_and_leaves_the_row(
    brama: Brama,
    row_counts: Callable[[Brama], tuple[int, int]],
    assert_log_explains_row: Callable[..., Any],
) -> None:
    with freeze_time(START):
        brama.register("db", scope="s", metadata={"v": 1}, failure_threshold=3, expiry=10)
        brama.failure("db", scope="s")
    before = brama.status("db", scope="s")
    counts = row_counts(brama)
    with pytest.raises(AlreadyRegisteredError) as caught:
        brama.register("db", scope="s", metadata={"v": 2}, failure_threshold=9, expiry=99)
    assert isinstance(caught.value, BramaError)
    assert "db" in str(caught.value)
    after = brama.status("db", scope="s")
    assert after.metadata == {"v": 1}
    assert (after.failure_threshold, after.expiry) == (3, 10.0)
    assert after.state is State.CLOSED
    assert after.failure_count == 1
    assert after.registered_at == before.registered_at == START
    assert after.total_failures == 1
    assert row_counts(brama) == counts
    assert_log_explains_row(brama, "db", "s")


def test_register_twice_unscoped_raises_on_every_dialect(brama: Brama) -> None:
    """A NULL scope must not slip past the uniqueness of (identifier, scope)."""
    brama.register("db")
    with pytest.raises(AlreadyRegisteredError):
        brama.register("db")
    assert [(s.identifier, s.scope) for s in brama.connections()] == [("db", None)]


def test_register_exist_ok_returns_the_existing_status_untouched(
    make_brama: Callable[..., Brama],
    row_counts: Callable[[Brama], tuple[int, int]],
    assert_log_explains_row: Callable[..., Any],
) -> None:
    brama = make_brama(failure_threshold=2)
    with freeze_time(START) as frozen:
        brama.register("db", metadata={"v": 1}, expiry=100)
        brama.success("db")
        frozen.tick(1)
        brama.failure("db")
        frozen.tick(1)
        brama.failure("db")
        frozen.tick(1)
        existing = brama.status("db")
        assert existing.state is State.OPEN
        counts = row_counts(brama)

        returned = brama.register(
            "db", metadata={"v": 2}, failure_threshold=9, expiry=5, exist_ok=True
        )
        assert returned == existing
        assert row_counts(brama) == counts
        now = brama.status("db")
    assert now == existing
    assert now.state is State.OPEN
    assert now.failure_count == 2
    assert (now.total_successes, now.total_failures) == (1, 2)
    assert now.metadata == {"v": 1}
    assert (now.failure_threshold, now.expiry) == (2, 100.0)
    assert_log_explains_row(brama, "db")


def test_register_exist_ok_registers_a_new_connection(brama: Brama) -> None:
    status = brama.register("db", exist_ok=True, metadata={"a": 1})
    assert status.state is State.UNKNOWN
    assert status.metadata == {"a": 1}
    assert [event.kind for event in brama.events("db")] == ["registered"]


REQUIRES_REGISTRATION: dict[str, Callable[[Brama], Any]] = {
    "success": lambda brama: brama.success("ghost", scope="s"),
    "failure": lambda brama: brama.failure("ghost", scope="s", reason="timeout"),
    "status": lambda brama: brama.status("ghost", scope="s"),
    "open": lambda brama: brama.open("ghost", scope="s"),
    "close": lambda brama: brama.close("ghost", scope="s"),
    "reset": lambda brama: brama.reset("ghost", scope="s"),
}


@pytest.mark.parametrize("operation", sorted(REQUIRES_REGISTRATION))
def test_unknown_connection_raises_not_registered(
    brama: Brama, operation: str, row_counts: Callable[[Brama], tuple[int, int]]
) -> None:
    brama.register("ghost")  # the unscoped one exists; ("ghost", "s") does not
    counts = row_counts(brama)
    with pytest.raises(NotRegisteredError) as caught:
        REQUIRES_REGISTRATION[operation](brama)
    assert isinstance(caught.value, LookupError)
    assert isinstance(caught.value, BramaError)
    assert "ghost" in str(caught.value)
    assert row_counts(brama) == counts


@pytest.mark.parametrize("operation", sorted(REQUIRES_REGISTRATION))
def test_unregistered_connection_raises_not_registered(brama: Brama, operation: str) -> None:
    brama.register("ghost", scope="s")
    assert brama.unregister("ghost", scope="s") is True
    with pytest.raises(NotRegisteredError):
        REQUIRES_REGISTRATION[operation](brama)


def test_unknown_connection_is_not_available_and_unregister_is_false(
    brama: Brama, row_counts: Callable[[Brama], tuple[int, int]]
) -> None:
    counts = row_counts(brama)
    assert brama.available("ghost") is False
    assert brama.available("ghost", scope="s") is False
    assert brama.unregister("ghost") is False
    assert brama.unregister("ghost", scope="s") is False
    assert row_counts(brama) == counts == (0, 0)


def test_unregister_returns_true_once(
    brama: Brama, assert_log_explains_row: Callable[..., Any]
) -> None:
    brama.register("db", failure_threshold=4, expiry=8)
    assert brama.unregister("db") is True
    assert brama.unregister("db") is False
    assert brama.available("db") is False
    assert brama.connections() == []
    assert_log_explains_row(brama, "db", None, Settings(4, timedelta(seconds=8)))


@pytest.mark.parametrize("scope", [None, "s"])
def test_concurrent_registrations_have_exactly_one_winner(
    make_brama: Callable[..., Brama],
    scope: str | None,
    row_counts: Callable[[Brama], tuple[int, int]],
) -> None:
    """Several processes' worth of Brama objects (one engine each) register at once."""
    contenders = 6
    bramas = [make_brama() for _ in range(contenders)]
    start = threading.Barrier(contenders)
    outcomes: list[object] = []

    def contend(brama: Brama, index: int) -> None:
        start.wait()
        try:
            outcomes.append(brama.register("db", scope=scope, metadata={"winner": index}))
        except BaseException as error:
            outcomes.append(error)

    threads = [
        threading.Thread(target=contend, args=(brama, index)) for index, brama in enumerate(bramas)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    winners = [outcome for outcome in outcomes if isinstance(outcome, ConnectionStatus)]
    losers = [outcome for outcome in outcomes if isinstance(outcome, AlreadyRegisteredError)]
    assert len(outcomes) == contenders, outcomes
    assert (len(winners), len(losers)) == (1, contenders - 1), outcomes
    assert bramas[0].status("db", scope=scope).metadata == winners[0].metadata
    assert row_counts(bramas[0]) == (1, 1)
