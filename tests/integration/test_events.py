"""events(), unregister() and cleanup(): the log, its filters, and history that outlives rows."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from freezegun import freeze_time

from brama_sql import Brama, Event, Kind, State
from brama_sql.circuit import Settings

START = datetime(2024, 3, 1, 12, 34, 56, 789012, tzinfo=timezone.utc)
LogCheck = Callable[..., Any]
RowCounts = Callable[[Brama], tuple[int, int]]


def _keys(log: list[Event]) -> list[tuple[str, str | None, str]]:
    return [(event.identifier, event.scope, event.kind.value) for event in log]


@pytest.fixture
def three_dbs(brama: Brama) -> Brama:
    """``db`` unscoped, in scope ``a`` and in scope ``b``, plus ``cache``; one report each,
    one second apart from START."""
    with freeze_time(START) as frozen:
        for identifier, scope in (("db", None), ("db", "a"), ("db", "b"), ("cache", None)):
            brama.register(identifier, scope=scope)
            frozen.tick(timedelta(seconds=1))
            brama.success(identifier, scope=scope)
            frozen.tick(timedelta(seconds=1))
    return brama


def test_events_are_oldest_first(three_dbs: Brama) -> None:
    log = three_dbs.events()
    assert len(log) == 4 * 3  # registered, success, transition unknown -> closed
    assert [event.id for event in log] == sorted(event.id for event in log)
    assert len({event.id for event in log}) == len(log)
    assert [event.occurred_at for event in log] == sorted(event.occurred_at for event in log)
    assert _keys(log)[:3] == [
        ("db", None, "registered"),
        ("db", None, "success"),
        ("db", None, "transition"),
    ]
    assert all(isinstance(event, Event) for event in log)


def test_identifier_filter(three_dbs: Brama) -> None:
    assert {(e.identifier, e.scope) for e in three_dbs.events("db")} == {
        ("db", None),
        ("db", "a"),
        ("db", "b"),
    }
    assert {e.identifier for e in three_dbs.events("cache")} == {"cache"}
    assert three_dbs.events("nothing") == []


def test_scope_left_out_means_every_scope_and_none_means_unscoped(three_dbs: Brama) -> None:
    every = three_dbs.events()
    assert {e.scope for e in every} == {None, "a", "b"}
    unscoped = three_dbs.events(scope=None)
    assert {(e.identifier, e.scope) for e in unscoped} == {("db", None), ("cache", None)}
    assert {(e.identifier, e.scope) for e in three_dbs.events("db", scope=None)} == {("db", None)}
    assert {(e.identifier, e.scope) for e in three_dbs.events(scope="a")} == {("db", "a")}
    assert three_dbs.events("cache", scope="a") == []


def test_connections_scope_filter_has_the_same_meaning(three_dbs: Brama) -> None:
    assert {(s.identifier, s.scope) for s in three_dbs.connections()} == {
        ("db", None),
        ("db", "a"),
        ("db", "b"),
        ("cache", None),
    }
    assert {(s.identifier, s.scope) for s in three_dbs.connections(scope=None)} == {
        ("db", None),
        ("cache", None),
    }
    assert [(s.identifier, s.scope) for s in three_dbs.connections(scope="b")] == [("db", "b")]
    assert three_dbs.connections(scope="zzz") == []


def test_connections_are_ordered_by_scope_then_identifier(brama: Brama) -> None:
    for identifier, scope in (("b", "y"), ("a", "y"), ("c", "x"), ("b", "x")):
        brama.register(identifier, scope=scope)
    listed = [(s.scope, s.identifier) for s in brama.connections()]
    assert listed == [("x", "b"), ("x", "c"), ("y", "a"), ("y", "b")]


def test_since_is_inclusive(three_dbs: Brama) -> None:
    cut = START + timedelta(seconds=3)  # the success of ("db", "a") happened exactly then
    log = three_dbs.events(since=cut)
    assert log
    assert all(event.occurred_at >= cut for event in log)
    assert _keys(log)[:2] == [("db", "a", "success"), ("db", "a", "transition")]
    earlier = [e for e in three_dbs.events() if e.occurred_at < cut]
    assert len(earlier) + len(log) == len(three_dbs.events())
    assert three_dbs.events(since=cut + timedelta(microseconds=1))[0].occurred_at > cut


def test_since_in_another_time_zone_means_the_same_instant(three_dbs: Brama) -> None:
    cut = START + timedelta(seconds=3)
    elsewhere = cut.astimezone(timezone(timedelta(hours=-5)))
    assert three_dbs.events(since=elsewhere) == three_dbs.events(since=cut)


def test_limit_keeps_the_first_events(three_dbs: Brama) -> None:
    every = three_dbs.events()
    assert three_dbs.events(limit=2) == every[:2]
    assert three_dbs.events(limit=100) == every
    assert three_dbs.events(limit=0) == []
    cut = START + timedelta(seconds=3)
    assert three_dbs.events(since=cut, limit=2) == three_dbs.events(since=cut)[:2]
    assert three_dbs.events("db", scope="b", limit=1) == three_dbs.events("db", scope="b")[:1]


def test_event_fields(brama: Brama) -> None:
    with freeze_time(START):
        brama.register("db", scope="s", failure_threshold=1)
        brama.failure("db", scope="s", reason="timeout")
    registered, failure, transition = brama.events("db", scope="s")
    assert (registered.kind, registered.reason, registered.failure_count) == (
        Kind.REGISTERED,
        None,
        0,
    )
    assert (failure.kind, failure.reason, failure.failure_count) == (Kind.FAILURE, "timeout", 1)
    assert (failure.from_state, failure.to_state) == (None, None)
    assert (transition.from_state, transition.to_state) == (State.UNKNOWN, State.OPEN)
    assert transition.kind == "transition"
    assert transition.failure_count == 1
    assert {(e.identifier, e.scope, e.occurred_at) for e in (registered, failure, transition)} == {
        ("db", "s", START)
    }


def test_unregister_logs_and_keeps_history(
    brama: Brama, row_counts: RowCounts, assert_log_explains_row: LogCheck
) -> None:
    with freeze_time(START) as frozen:
        brama.register("db", scope="s", failure_threshold=3, expiry=20)
        brama.failure("db", scope="s")
        frozen.tick(timedelta(seconds=5))
        assert brama.unregister("db", scope="s") is True
    log = brama.events("db", scope="s")
    assert _keys(log) == [
        ("db", "s", "registered"),
        ("db", "s", "failure"),
        ("db", "s", "transition"),
        ("db", "s", "unregistered"),
    ]
    assert log[-1].occurred_at == START + timedelta(seconds=5)
    assert brama.connections() == []
    assert row_counts(brama) == (0, 4)
    counts = row_counts(brama)
    assert brama.unregister("db", scope="s") is False
    assert row_counts(brama) == counts
    assert_log_explains_row(brama, "db", "s", Settings(3, timedelta(seconds=20)))


def test_reregistering_starts_fresh_but_keeps_history(
    brama: Brama, assert_log_explains_row: LogCheck
) -> None:
    with freeze_time(START) as frozen:
        brama.register("db", failure_threshold=2, expiry=20, metadata={"generation": 1})
        brama.success("db")
        brama.failure("db")
        brama.failure("db")
        assert brama.status("db").state is State.OPEN
        brama.unregister("db")
        frozen.tick(timedelta(seconds=1))
        fresh = brama.register("db", failure_threshold=2, expiry=20, metadata={"generation": 2})
        assert fresh.state is State.UNKNOWN
        assert fresh.registered_at == START + timedelta(seconds=1)
        status = brama.status("db")
    assert status.state is State.UNKNOWN
    assert status.failure_count == 0
    assert status.opened_at is None
    assert (status.total_successes, status.total_failures, status.success_rate) == (0, 0, None)
    assert status.last_success_time is None
    assert status.last_failure_time is None
    assert status.metadata == {"generation": 2}
    assert status.state_changed_at == START + timedelta(seconds=1)
    kinds = [event.kind.value for event in brama.events("db")]
    assert kinds == [
        "registered",
        "success",
        "transition",
        "failure",
        "failure",
        "transition",
        "unregistered",
        "registered",
    ]
    brama.success("db")
    assert brama.status("db").total_successes == 1
    assert_log_explains_row(brama, "db")


def test_cleanup_removes_only_idle_connections(
    make_brama: Callable[..., Brama], assert_log_explains_row: LogCheck
) -> None:
    brama = make_brama(inactive_after=100)
    with freeze_time(START) as frozen:
        brama.register("idle")
        brama.register("reported")
        brama.register("closed")
        frozen.tick(timedelta(seconds=50))
        brama.register("young")
        brama.failure("reported")
        brama.close("closed")  # a transition counts as activity too
        frozen.tick(timedelta(seconds=51))  # 101 s after START, 51 s after the rest
        assert brama.cleanup() == 1
        assert {s.identifier for s in brama.connections()} == {"reported", "closed", "young"}
        removed = brama.events("idle")[-1]
        assert removed.kind is Kind.REMOVED
        assert removed.occurred_at == START + timedelta(seconds=101)
        assert brama.cleanup() == 0
        frozen.tick(timedelta(seconds=50))  # 101 s after the last activity of the rest
        assert brama.cleanup() == 3
        assert brama.connections() == []
    for identifier in ("idle", "reported", "closed", "young"):
        assert brama.events(identifier)[-1].kind is Kind.REMOVED
        assert brama.events(identifier)[0].kind is Kind.REGISTERED
        assert_log_explains_row(brama, identifier, None, Settings(5, timedelta(seconds=60)))


def test_a_fresh_connection_is_never_cleaned_up(
    make_brama: Callable[..., Brama], row_counts: RowCounts
) -> None:
    brama = make_brama(inactive_after=0.001)
    with freeze_time(START):
        brama.register("db")
        counts = row_counts(brama)
        assert brama.cleanup() == 0
        assert row_counts(brama) == counts
        assert brama.status("db").state is State.UNKNOWN


def test_cleanup_disabled_by_inactive_after_none(
    make_brama: Callable[..., Brama], row_counts: RowCounts
) -> None:
    brama = make_brama(inactive_after=None)
    with freeze_time(START) as frozen:
        brama.register("db")
        frozen.tick(timedelta(days=3650))
        counts = row_counts(brama)
        assert brama.cleanup() == 0
        assert row_counts(brama) == counts
        assert [s.identifier for s in brama.connections()] == ["db"]


def test_cleanup_history_survives_and_reregister_is_fresh(
    make_brama: Callable[..., Brama], assert_log_explains_row: LogCheck
) -> None:
    brama = make_brama(inactive_after=timedelta(hours=1))
    with freeze_time(START) as frozen:
        brama.register("db", scope="s")
        brama.failure("db", scope="s")
        frozen.tick(timedelta(hours=2))
        assert brama.cleanup() == 1
        assert brama.available("db", scope="s") is False
        status = brama.register("db", scope="s")
        assert (status.total_failures, status.failure_count, status.state) == (
            0,
            0,
            State.UNKNOWN,
        )
    assert [e.kind.value for e in brama.events("db", scope="s")] == [
        "registered",
        "failure",
        "transition",
        "removed",
        "registered",
    ]
    assert_log_explains_row(brama, "db", "s")


def test_logged_events_are_never_rewritten(make_brama: Callable[..., Brama]) -> None:
    """Later calls only append: every event read earlier comes back unchanged, in place."""
    brama = make_brama(inactive_after=100)
    with freeze_time(START) as frozen:
        brama.register("db", failure_threshold=2, expiry=10)
        brama.failure("db")
        brama.failure("db")
        earlier = brama.events()
        frozen.tick(timedelta(seconds=11))
        brama.success("db")
        brama.open("db", reason="maintenance")
        brama.reset("db")
        brama.unregister("db")
        brama.register("db")
        frozen.tick(timedelta(seconds=200))
        assert brama.cleanup() == 1
    later = brama.events()
    assert later[: len(earlier)] == earlier
    assert len(later) > len(earlier)
