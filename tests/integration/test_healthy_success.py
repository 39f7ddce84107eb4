"""A healthy success (a closed circuit with no failures counted, which the report leaves as it
is) takes the row's shared lock on PostgreSQL and MariaDB, never the exclusive one: healthy
successes run side by side, and a report that changes the circuit still serialises with them.
Such successes are appended without touching the row; the next exclusive write folds them into
the row's tallies, and status(), cleanup() and verify() count the few not folded yet."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.engine import URL, Connection

from brama_sql import Brama, Kind, State, store
from brama_sql.errors import BramaDatabaseError
from brama_sql.replay import verify
from brama_sql.schema import connections

SERVERS = pytest.mark.parametrize("dialect", ["postgresql", "mysql"], indirect=True)
START = datetime(2031, 9, 1, 6, 0, tzinfo=timezone.utc)
LOCK_TIMEOUT = 1.0


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


@contextmanager
def shared_row_lock(db_url: URL, identifier: str = "svc") -> Iterator[Connection]:
    """Another connection holds the row's shared lock until the block ends."""
    engine = create_engine(db_url)
    conn = engine.connect()
    try:
        conn.execute(
            select(connections.c.id)
            .where(connections.c.identifier == identifier, connections.c.scope == "")
            .with_for_update(read=True)
        )
        yield conn
    finally:
        conn.rollback()
        conn.close()
        engine.dispose()


def tallied_through(brama: Brama, identifier: str = "svc") -> int:
    with brama.engine.connect() as conn:
        found: int = conn.execute(
            select(connections.c.tallied_through).where(connections.c.identifier == identifier)
        ).scalar_one()
    return found


@SERVERS
def test_a_healthy_success_does_not_wait_behind_a_shared_lock(
    db_url: URL, make_brama: Callable[..., Brama]
) -> None:
    brama = make_brama(lock_timeout=LOCK_TIMEOUT)
    brama.register("svc")
    brama.success("svc")  # unknown -> closed: a transition, written exclusively
    with shared_row_lock(db_url):
        started = time.monotonic()
        for _ in range(5):
            assert brama.success("svc") is None
        assert time.monotonic() - started < LOCK_TIMEOUT
        # A report that changes the circuit needs the exclusive lock and waits for it.
        with pytest.raises(BramaDatabaseError):
            brama.failure("svc")
    assert brama.status("svc").total_successes == 6
    verify(brama.engine, "svc")


@SERVERS
def test_a_success_that_resets_failures_is_written_exclusively(
    db_url: URL, make_brama: Callable[..., Brama]
) -> None:
    brama = make_brama(lock_timeout=LOCK_TIMEOUT)
    brama.register("svc")
    brama.failure("svc")
    with shared_row_lock(db_url), pytest.raises(BramaDatabaseError):
        brama.success("svc")
    brama.success("svc")
    status = brama.status("svc")
    assert (status.failure_count, status.total_successes, status.total_failures) == (0, 1, 1)
    verify(brama.engine, "svc")


def test_successes_not_folded_yet_count_everywhere(make_brama: Callable[..., Brama]) -> None:
    clock = Clock()
    brama = make_brama(clock=clock, inactive_after=3600)
    brama.register("svc")
    brama.success("svc")
    folded = tallied_through(brama)
    for _ in range(7):
        clock.now += timedelta(seconds=10)
        brama.success("svc")
    dialect = brama.engine.dialect.name
    if dialect != "sqlite":  # SQLite's writes are serialised anyway: every write folds
        assert tallied_through(brama) == folded, "healthy successes leave the row alone"
    status = brama.status("svc")
    assert status.total_successes == 8 and status.last_success_time == clock.now
    assert [item.total_successes for item in brama.connections()] == [8]
    verify(brama.engine, "svc")
    clock.now += timedelta(seconds=3599)
    assert brama.cleanup() == 0, "the newest success is the last activity"
    brama.failure("svc")  # an exclusive write folds the tail
    assert tallied_through(brama) == brama.events("svc")[-1].id
    status = brama.status("svc")
    assert (status.total_successes, status.total_failures) == (8, 1)
    verify(brama.engine, "svc")


def test_a_long_run_of_healthy_successes_is_folded_as_it_goes(
    make_brama: Callable[..., Brama], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store, "FOLD_GAP", 5)
    brama = make_brama()
    brama.register("svc")
    for _ in range(40):
        brama.success("svc")
        unfolded = [e for e in brama.events("svc") if e.id > tallied_through(brama)]
        assert len(unfolded) <= 5
        assert all(event.kind is Kind.SUCCESS for event in unfolded)
    assert brama.status("svc").total_successes == 40
    assert brama.status("svc").state is State.CLOSED
    verify(brama.engine, "svc")


def test_other_connections_events_do_not_make_a_quiet_connections_success_fold(
    make_brama: Callable[..., Brama], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ids are global: a success far past its row's tallied_through by ids, because other
    connections logged meanwhile, counts its own tail and folds only when that is long."""
    monkeypatch.setattr(store, "FOLD_GAP", 5)
    brama = make_brama()
    brama.register("quiet")
    brama.register("busy")
    brama.success("quiet")  # unknown -> closed: an exclusive write, tallied_through at it
    brama.success("busy")
    through = tallied_through(brama, "quiet")
    for round_ in range(5):
        for _ in range(10):
            brama.success("busy")
        brama.success("quiet")
        assert tallied_through(brama, "quiet") == through, f"round {round_}: no fold"
    brama.success("quiet")  # its own tail now holds 6 events: more than FOLD_GAP
    assert tallied_through(brama, "quiet") == brama.events("quiet")[-1].id
    assert brama.status("quiet").total_successes == 7
    verify(brama.engine, "quiet")
    verify(brama.engine, "busy")


def test_pruning_folds_the_tail_first(make_brama: Callable[..., Brama]) -> None:
    clock = Clock()
    brama = make_brama(clock=clock)
    brama.register("svc")
    for _ in range(10):
        brama.success("svc")
    logged = len(brama.events("svc"))  # with the registration and unknown -> closed
    clock.now += timedelta(days=2)
    assert brama.prune(86_400) == logged
    status = brama.status("svc")
    assert status.total_successes == 10 and status.last_success_time == START
    verify(brama.engine, "svc")


@SERVERS
def test_an_exclusive_write_folds_a_tail_dated_after_it(make_brama: Callable[..., Brama]) -> None:
    """The UPDATE of an exclusive write folds the tail it finds: a tail written by a host
    whose clock runs ahead keeps its later times (the later of the row's and the tail's)."""
    ahead, behind = Clock(), Clock()
    ahead.now = START + timedelta(minutes=5)
    fast = make_brama(clock=ahead)
    slow = make_brama(clock=behind)
    fast.register("svc")
    fast.success("svc")
    first = tallied_through(fast)
    for _ in range(3):
        ahead.now += timedelta(seconds=1)
        fast.success("svc")
    assert tallied_through(fast) == first, "a tail of healthy successes"
    slow.failure("svc", reason="late clock")
    status = slow.status("svc")
    assert (status.total_successes, status.total_failures) == (4, 1)
    assert status.last_success_time == ahead.now
    assert status.last_failure_time == START
    assert tallied_through(slow) == slow.events("svc")[-1].id
    verify(slow.engine, "svc")
