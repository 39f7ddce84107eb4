"""The fleet guarantees, proven with real processes on every dialect: exact shared counts, one
trip per episode, one probe per permit, one winner of a registration race, and restarts that
never reset shared state. After each test, the log explains the row."""

from __future__ import annotations

import multiprocessing
import queue
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import fleet_workers
import pytest
from freezegun import freeze_time
from sqlalchemy import func, select
from sqlalchemy.engine import URL

from brama_sql import Brama, Kind, State
from brama_sql.replay import verify
from brama_sql.schema import connections, events, permits

pytestmark = pytest.mark.slow

PROCESSES = 8
T0 = datetime(2030, 1, 1, 12, 0, 0, 250_000, tzinfo=timezone.utc)


def run_fleet(target: Callable[..., None], args: tuple[Any, ...], processes: int) -> list[Any]:
    """Run ``target(*args, barrier, results)`` in ``processes`` spawned processes that start
    together; return what each one put on the results queue."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(processes)
    results = context.Queue()
    workers = [
        context.Process(target=target, args=(*args, barrier, results)) for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    collected: list[Any] = []
    while len(collected) < processes:
        try:
            collected.append(results.get(timeout=1))
        except queue.Empty:
            if not any(worker.is_alive() for worker in workers):
                break
    for worker in workers:
        worker.join(60)
    assert [worker.exitcode for worker in workers] == [0] * processes
    assert len(collected) == processes
    return collected


def url_of(db_url: URL) -> str:
    return db_url.render_as_string(hide_password=False)


def count_events(brama: Brama, identifier: str, kind: Kind) -> int:
    with brama.engine.connect() as conn:
        return conn.execute(
            select(func.count())
            .select_from(events)
            .where(events.c.identifier == identifier, events.c.kind == kind.value)
        ).scalar_one()


def test_every_report_is_counted_exactly_once(brama: Brama, db_url: URL) -> None:
    brama.register("hot", failure_threshold=1_000_000)
    run_fleet(fleet_workers.report_failures, (url_of(db_url), "hot", 500), PROCESSES)
    status = brama.status("hot")
    assert status.failure_count == 4000
    assert status.total_failures == 4000
    assert count_events(brama, "hot", Kind.FAILURE) == 4000
    assert status.state is State.CLOSED
    verify(brama.engine, "hot")


def test_the_circuit_trips_exactly_once_and_admits_no_call_after(brama: Brama, db_url: URL) -> None:
    brama.register("flaky", failure_threshold=50, expiry=3600)
    seen = run_fleet(fleet_workers.attempt_calls, (url_of(db_url), "flaky", 50), PROCESSES)

    log = brama.events("flaky")
    trips = [e for e in log if e.kind is Kind.TRANSITION and e.to_state is State.OPEN]
    assert len(trips) == 1
    (trip,) = trips
    actors = {result["actor"]: result for result in seen}
    assert trip.actor in actors, "the trip names the caller whose report tripped it"
    told = [result["actor"] for result in seen if ("closed", "open") in result["caused"]]
    assert told == [trip.actor], "failure() told exactly the tripping caller"
    tripping_report = log[log.index(trip) - 1]
    assert tripping_report.kind is Kind.FAILURE and tripping_report.failure_count == 50
    assert tripping_report.actor == trip.actor

    attempts = sum(len(result["granted"]) for result in seen)
    assert 50 <= attempts <= 50 + PROCESSES - 1
    assert brama.status("flaky").total_failures == attempts
    late = [e for e in log if e.kind is Kind.FAILURE and e.id > trip.id]
    assert len(late) <= PROCESSES - 1, "only calls already in flight may report after the trip"

    # The tripping caller's failure() returned after the trip committed; no check that began
    # after that moment was granted.
    tripper = actors[trip.actor]
    own_reports = [e for e in log if e.kind is Kind.FAILURE and e.actor == trip.actor]
    committed_by = tripper["reported"][own_reports.index(tripping_report)]
    latest_grant = max(t for result in seen for t in result["granted"])
    assert latest_grant < committed_by
    verify(brama.engine, "flaky")


def test_one_probe_per_permit_across_processes(brama: Brama, db_url: URL) -> None:
    with freeze_time(T0):
        brama.register(
            "probe", failure_threshold=1, expiry=60, half_open_max_calls=1, probe_timeout=30
        )
        brama.failure("probe")
    assert brama.status("probe").state is State.OPEN

    after_expiry = (T0 + timedelta(seconds=61)).isoformat()
    first = run_fleet(
        fleet_workers.ask_available_at, (url_of(db_url), "probe", after_expiry), PROCESSES
    )
    assert sorted(answer for _, answer in first) == [False] * (PROCESSES - 1) + [True]

    after_timeout = (T0 + timedelta(seconds=61 + 31)).isoformat()
    second = run_fleet(
        fleet_workers.ask_available_at, (url_of(db_url), "probe", after_timeout), PROCESSES
    )
    assert sorted(answer for _, answer in second) == [False] * (PROCESSES - 1) + [True]

    with brama.engine.connect() as conn:
        held = conn.execute(select(permits.c.holder)).scalars().all()
    winner = next(actor for actor, answer in second if answer)
    assert held == [winner]
    transitions = [e for e in brama.events("probe") if e.kind is Kind.TRANSITION]
    assert [(e.from_state, e.to_state) for e in transitions] == [
        (State.UNKNOWN, State.OPEN),
        (State.OPEN, State.HALF_OPEN),
    ]
    with freeze_time(T0 + timedelta(seconds=100)):
        verify(brama.engine, "probe")


def test_one_registration_wins_a_race(brama: Brama, db_url: URL) -> None:
    for round_ in range(4):
        identifier = f"raced-{round_}"
        results = run_fleet(fleet_workers.register_once, (url_of(db_url), identifier), 2)
        assert sorted(results) == ["already", "registered"]
        assert count_events(brama, identifier, Kind.REGISTERED) == 1
        with brama.engine.connect() as conn:
            rows = conn.execute(
                select(func.count())
                .select_from(connections)
                .where(connections.c.identifier == identifier)
            ).scalar_one()
        assert rows == 1
        verify(brama.engine, identifier)


def test_a_restarting_process_never_resets_shared_state(brama: Brama, db_url: URL) -> None:
    brama.register("shared", failure_threshold=1000)
    for _ in range(10):
        brama.failure("shared")
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    child = context.Process(
        target=fleet_workers.restart_and_report, args=(url_of(db_url), "shared", 5, results)
    )
    child.start()
    seen_at_start = results.get(timeout=60)
    child.join(60)
    assert child.exitcode == 0
    assert seen_at_start == 10
    status = brama.status("shared")
    assert status.failure_count == 15
    assert status.failure_threshold == 1000, "register(exist_ok=True) changed no option"
    assert status.state is State.CLOSED
    assert count_events(brama, "shared", Kind.REGISTERED) == 1
    verify(brama.engine, "shared")
