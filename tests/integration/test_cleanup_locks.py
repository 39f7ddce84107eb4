"""cleanup() next to calls in progress: a row locked elsewhere is active and skipped without
waiting, every other idle connection is removed, and the count returned is exact. On SQLite,
where the database is one lock, a writer holding it past ``lock_timeout`` ends the run with the
count of what it removed. Inactivity comes from a clock the test moves, never from sleeping."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import create_engine, event, func, select
from sqlalchemy.engine import URL, Connection

from brama_sql import Brama, Kind
from brama_sql.schema import connections

START = datetime(2031, 9, 1, 6, 0, tzinfo=timezone.utc)
LOCK_TIMEOUT = 1.0
IDLE = ["svc", "a", "b", "c"]  # "svc" is registered first: the first candidate


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def idle_brama(make_brama: Callable[..., Brama]) -> Brama:
    """A Brama whose connections ``IDLE`` have all been idle past ``inactive_after``."""
    clock = Clock()
    brama = make_brama(inactive_after=60, clock=clock, lock_timeout=LOCK_TIMEOUT)
    for identifier in IDLE:
        brama.register(identifier)
    clock.now += timedelta(seconds=61)
    return brama


def removed_events(brama: Brama) -> list[str]:
    return sorted(event.identifier for event in brama.events() if event.kind is Kind.REMOVED)


def test_cleanup_skips_a_row_locked_elsewhere_and_removes_every_other_idle_one(
    idle_brama: Brama,
    hold_row_lock: Callable[..., AbstractContextManager[Connection]],
    dialect: str,
) -> None:
    with hold_row_lock("svc"):
        started = time.monotonic()
        removed = idle_brama.cleanup()
        took = time.monotonic() - started
        left = [status.identifier for status in idle_brama.connections()]
    if dialect == "sqlite":
        # The whole database is locked: it waits the lock wait limit, then gives up the rest.
        assert (removed, left) == (0, sorted(IDLE))
        assert LOCK_TIMEOUT * 0.8 <= took < LOCK_TIMEOUT + 3
    else:
        assert (removed, left) == (3, ["svc"])
        assert took < LOCK_TIMEOUT, "a locked row is skipped, not waited for"
    assert removed_events(idle_brama) == sorted(set(IDLE) - set(left))

    assert idle_brama.cleanup() == len(left), "the rest goes once the lock is released"
    assert idle_brama.connections() == []
    assert removed_events(idle_brama) == sorted(IDLE), "each removed exactly once"


@pytest.mark.parametrize("dialect", ["sqlite"], indirect=True)
def test_sqlite_cleanup_keeps_the_count_when_another_writer_locks_the_database_midway(
    idle_brama: Brama, db_url: URL
) -> None:
    """Another writer takes SQLite's write lock right after the first removal committed: that
    one is counted, the others wait for the next run."""
    holder_engine = create_engine(db_url)
    holder = holder_engine.connect()
    held: list[bool] = []

    def rows() -> int:
        with holder_engine.connect() as reader:
            return int(reader.execute(select(func.count()).select_from(connections)).scalar_one())

    def lock_after_the_first_removal(_dbapi_connection: Any, _record: Any) -> None:
        if not held and rows() < len(IDLE):
            holder.exec_driver_sql("BEGIN IMMEDIATE")
            held.append(True)

    event.listen(idle_brama.engine.pool, "checkin", lock_after_the_first_removal)
    try:
        started = time.monotonic()
        assert idle_brama.cleanup() == 1
        assert time.monotonic() - started < LOCK_TIMEOUT + 3
        assert held == [True]
        assert [status.identifier for status in idle_brama.connections()] == IDLE[1:]
    finally:
        event.remove(idle_brama.engine.pool, "checkin", lock_after_the_first_removal)
        holder.rollback()
        holder.close()
        holder_engine.dispose()
    assert idle_brama.cleanup() == len(IDLE) - 1
    assert removed_events(idle_brama) == sorted(IDLE)
