"""prune(): old events are deleted in batches, totals stay exact (the row's tallies and the
hourly rollups), verify still explains every row from the checkpoint pruning leaves, the log
of a removed connection goes whole once it is old, and pruning beside live reports loses
nothing. Time comes from a clock the test moves."""

from __future__ import annotations

import re
import threading
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import bindparam, func, select, text, update

from brama_sql import Brama, Kind, State
from brama_sql.migration import downgrade, upgrade
from brama_sql.replay import ReplayError, verify
from brama_sql.schema import connections, events, rollups
from brama_sql.types import UTCDateTime

START = datetime(2031, 9, 1, 6, 0, tzinfo=timezone.utc)
STEP = timedelta(seconds=90)
HOUR = 3600.0
RETENTION = Path(__file__).resolve().parents[2] / "docs" / "retention.md"


class Clock:
    """A clock the test moves by hand (shared by threads: reads are atomic)."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


def live_through_three_hours(brama: Brama, clock: Clock, identifier: str = "svc") -> None:
    """Register ``identifier`` and give it three hours of history: failures that trip it,
    expiries, probes that fail and succeed, a reconfiguration and manual actions."""
    brama.register(identifier, failure_threshold=3, expiry=600)
    for step in range(120):
        clock.now += STEP
        if step == 50:
            brama.configure(identifier, failure_threshold=4)
        if step == 80:
            brama.open(identifier, reason="maintenance")
        elif step == 84:
            brama.close(identifier)
        elif step % 12 in (0, 1, 2, 3, 9):
            brama.failure(identifier, reason=f"step {step}")
        else:
            brama.success(identifier)


def rollup_totals(brama: Brama, identifier: str = "svc") -> dict[str, int]:
    with brama.engine.connect() as conn:
        row = conn.execute(
            select(
                func.coalesce(func.sum(rollups.c.events), 0),
                func.coalesce(func.sum(rollups.c.successes), 0),
                func.coalesce(func.sum(rollups.c.failures), 0),
                func.coalesce(func.sum(rollups.c.transitions), 0),
                func.coalesce(func.sum(rollups.c.trips), 0),
            ).where(rollups.c.identifier == identifier)
        ).one()
    return dict(
        zip(["events", "successes", "failures", "transitions", "trips"], map(int, row), strict=True)
    )


def log_totals(log: list[Any]) -> dict[str, int]:
    kinds = Counter(event.kind for event in log)
    return {
        "events": len(log),
        "successes": kinds[Kind.SUCCESS],
        "failures": kinds[Kind.FAILURE],
        "transitions": kinds[Kind.TRANSITION],
        "trips": sum(event.to_state is State.OPEN for event in log),
    }


def test_pruning_keeps_totals_exact_and_the_log_explains_the_row(
    make_brama: Callable[..., Brama],
) -> None:
    clock = Clock()
    brama = make_brama(clock=clock)
    live_through_three_hours(brama, clock)
    before = brama.status("svc")
    log = brama.events("svc")
    cutoff = clock.now - timedelta(hours=1)
    old = [event for event in log if event.occurred_at < cutoff]
    assert len(old) > 50 and any(event.to_state is State.OPEN for event in old)

    deleted = brama.prune(HOUR, batch_size=7)

    assert deleted == len(old)
    left = brama.events("svc")
    assert left == [event for event in log if event.occurred_at >= cutoff]
    assert brama.status("svc") == before
    assert rollup_totals(brama) == log_totals(old)
    verify(brama.engine, "svc")
    assert brama.prune(HOUR) == 0, "a second run finds nothing more to delete"

    # Life goes on; a later prune goes on from the checkpoint the first one left.
    for _ in range(30):
        clock.now += STEP
        brama.failure("svc")
    clock.now += timedelta(hours=2)
    newer = brama.events("svc")
    assert newer[: len(left)] == left and len(newer) >= len(left) + 30
    everything_before = old + newer
    assert brama.prune(HOUR, batch_size=11) == len(newer)
    assert brama.events("svc") == []
    verify(brama.engine, "svc")
    after = brama.status("svc")
    assert after.total_failures == before.total_failures + 30
    assert after.total_successes == before.total_successes
    assert rollup_totals(brama) == log_totals(everything_before)


def test_the_log_of_a_removed_connection_goes_whole_once_it_is_old(
    make_brama: Callable[..., Brama],
) -> None:
    clock = Clock()
    brama = make_brama(clock=clock)
    brama.register("gone")
    brama.failure("gone")
    brama.success("gone")
    brama.unregister("gone")
    old_log = brama.events("gone")
    clock.now += timedelta(hours=2)
    brama.register("recent")
    brama.failure("recent")
    brama.unregister("recent")
    clock.now += timedelta(minutes=10)

    assert brama.prune(HOUR) == len(old_log)
    assert brama.events("gone") == []
    recent = [event.kind for event in brama.events("recent")]
    assert recent[0] is Kind.REGISTERED and recent[-1] is Kind.UNREGISTERED
    assert rollup_totals(brama, "gone") == log_totals(old_log)


def test_a_registered_connection_keeps_its_recent_events_and_its_row(
    make_brama: Callable[..., Brama],
) -> None:
    clock = Clock()
    brama = make_brama(clock=clock, inactive_after=None)
    brama.register("quiet")
    brama.failure("quiet")
    logged = len(brama.events("quiet"))
    clock.now += timedelta(days=40)
    assert brama.prune(timedelta(days=30)) == logged
    status = brama.status("quiet")
    assert status.failure_count == 1 and status.total_failures == 1
    assert status.last_failure_time == START
    assert brama.events("quiet") == []
    verify(brama.engine, "quiet")
    brama.success("quiet")  # the row goes on from where the log was cut
    verify(brama.engine, "quiet")


def test_verify_checks_the_tallies_against_the_log(make_brama: Callable[..., Brama]) -> None:
    clock = Clock()
    brama = make_brama(clock=clock)
    live_through_three_hours(brama, clock)
    with brama.engine.begin() as conn:
        conn.execute(update(connections).values(successes=connections.c.successes + 1))
    with pytest.raises(ReplayError, match="tallies"):
        verify(brama.engine, "svc")


def test_bad_arguments_are_refused_before_anything_is_deleted(brama: Brama) -> None:
    from brama_sql.errors import ArgumentTypeError, InvalidArgumentError

    brama.register("svc")
    for wrong in ("30d", None, [1]):
        with pytest.raises(ArgumentTypeError):
            brama.prune(wrong)  # type: ignore[arg-type]
    for nonsense in (0, -1, float("nan")):
        with pytest.raises(InvalidArgumentError):
            brama.prune(nonsense)
    with pytest.raises(InvalidArgumentError):
        brama.prune(60, batch_size=0)
    assert len(brama.events("svc")) == 1


@pytest.mark.slow
def test_pruning_beside_live_reports_loses_nothing(make_brama: Callable[..., Brama]) -> None:
    """Three threads report while a prune with small batches deletes the old half of the log:
    every report counts, and the log still explains the row."""
    clock = Clock()
    brama = make_brama(clock=clock, failure_threshold=10**6)
    brama.register("svc")
    for _ in range(150):
        brama.failure("svc")
        brama.success("svc")
    old = len(brama.events("svc"))
    clock.now += timedelta(hours=2)
    reports_per_thread = 60
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def report() -> None:
        try:
            start.wait(30)
            for _ in range(reports_per_thread):
                brama.failure("svc")
        except BaseException as error:  # reported by the assert below
            errors.append(error)

    threads = [threading.Thread(target=report) for _ in range(3)]
    for thread in threads:
        thread.start()
    start.wait(30)
    deleted = brama.prune(HOUR, batch_size=5)
    for thread in threads:
        thread.join(60)
    assert not errors and not any(thread.is_alive() for thread in threads)
    assert deleted == old
    status = brama.status("svc")
    assert status.total_failures == 150 + 3 * reports_per_thread
    assert status.total_successes == 150
    assert len(brama.events("svc")) == 3 * reports_per_thread
    verify(brama.engine, "svc")


def test_revision_0004_fills_the_tallies_from_the_log_and_downgrades(
    make_brama: Callable[..., Brama],
) -> None:
    clock = Clock()
    brama = make_brama(clock=clock)
    live_through_three_hours(brama, clock)
    brama.register("other")
    brama.failure("other")
    before = brama.connections()
    downgrade(brama.engine, "0003")
    with brama.engine.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM brama_events")).scalar() == len(
            brama_events(brama)
        )
    upgrade(brama.engine)
    assert brama.connections() == before
    verify(brama.engine, "svc")
    verify(brama.engine, "other")


def brama_events(brama: Brama) -> list[Any]:
    with brama.engine.connect() as conn:
        return list(conn.execute(select(events.c.id)))


def documented_query(name: str) -> str:
    """The SQL block of docs/retention.md under ``<!-- query: name -->``."""
    found = re.search(
        rf"<!-- query: {name} -->\s*```sql\n(.*?)```", RETENTION.read_text(), re.DOTALL
    )
    assert found, f"docs/retention.md has no query {name}"
    return found.group(1)


def test_the_documented_totals_since_an_hour_count_pruned_and_logged_events_once(
    make_brama: Callable[..., Brama],
) -> None:
    clock = Clock()
    brama = make_brama(clock=clock)
    live_through_three_hours(brama, clock)
    brama.register("other", scope="x")
    brama.failure("other", scope="x")
    whole = {("", "svc"): log_totals(brama.events("svc"))}
    whole[("x", "other")] = log_totals(brama.events("other", scope="x"))
    assert brama.prune(HOUR, batch_size=50) > 0
    statement = text(documented_query("totals_since_hour")).bindparams(
        bindparam("since", type_=UTCDateTime())
    )
    with brama.engine.connect() as conn:
        rows = conn.execute(statement, {"since": START}).all()
    assert {
        (row.scope, row.identifier): (int(row.successes), int(row.failures), int(row.trips))
        for row in rows
    } == {
        key: (totals["successes"], totals["failures"], totals["trips"])
        for key, totals in whole.items()
    }
