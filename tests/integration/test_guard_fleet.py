"""Guards and listeners across processes, on every dialect: one probe per episode from 4
processes x 4 threads of guards with ``half_open_max_calls=1``; each transition announced
exactly once across 4 processes; ``register=True`` racing from 4 processes registers once and
never resets. Time comes from a clock the processes share (see ``guard_workers``)."""

from __future__ import annotations

import multiprocessing
import queue
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import guard_workers
import pytest
from guard_workers import shared_clock
from sqlalchemy import func, select
from sqlalchemy.engine import URL

from brama_sql import Brama, Kind, State
from brama_sql.replay import verify
from brama_sql.schema import events

pytestmark = pytest.mark.slow

PROCESSES = 4
THREADS = 4
EPISODES = 4
EXPIRY = 60


def url_of(db_url: URL) -> str:
    return db_url.render_as_string(hide_password=False)


def start_fleet(
    target: Callable[..., None], args: tuple[Any, ...], processes: int
) -> tuple[list[Any], Any]:
    """Start ``target(*args, barrier, results)`` in ``processes`` spawned processes. The
    barrier is kept on the first worker: a spawned child rebuilds it from its name, which
    must outlive the start."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(processes)
    results = context.Queue()
    workers = [
        context.Process(target=target, args=(*args, barrier, results)) for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    workers[0].barrier = barrier  # type: ignore[attr-defined]
    return workers, results


def collect(workers: list[Any], results: Any) -> list[Any]:
    """What each worker sent; every worker must end cleanly within a minute."""
    collected: list[Any] = []
    deadline = time.monotonic() + 60
    while len(collected) < len(workers) and time.monotonic() < deadline:
        try:
            collected.append(results.get(timeout=1))
        except queue.Empty:
            if not any(worker.is_alive() for worker in workers):
                break
    for worker in workers:
        worker.join(60)
    assert [worker.exitcode for worker in workers] == [0] * len(workers)
    assert len(collected) == len(workers)
    return collected


def reopened(brama: Brama, identifier: str) -> int:
    """How many ``half_open -> open`` transitions the log holds."""
    with brama.engine.connect() as conn:
        return conn.execute(
            select(func.count())
            .select_from(events)
            .where(
                events.c.identifier == identifier,
                events.c.kind == Kind.TRANSITION.value,
                events.c.from_state == State.HALF_OPEN.value,
                events.c.to_state == State.OPEN.value,
            )
        ).scalar_one()


def test_guards_in_processes_and_threads_let_one_probe_through_per_episode(
    db_url: URL,
) -> None:
    context = multiprocessing.get_context("spawn")
    seconds = context.Value("d", 0.0)
    stop = context.Event()
    brama = Brama(url_of(db_url), clock=shared_clock(seconds))
    brama.register(
        "probe", failure_threshold=1, expiry=EXPIRY, half_open_max_calls=1, probe_timeout=3600
    )
    brama.failure("probe")  # open at T0: episode 1
    workers, results = start_fleet(
        guard_workers.probe_in_threads,
        (url_of(db_url), "probe", seconds, stop, THREADS),
        PROCESSES,
    )
    try:
        for episode in range(1, EPISODES + 1):
            seconds.value = episode * (EXPIRY + 1)  # past the expiry of the latest opening
            deadline = time.monotonic() + 20
            while reopened(brama, "probe") < episode and time.monotonic() < deadline:
                time.sleep(0.01)  # polling the fleet's progress; the clock is not waited for
            assert reopened(brama, "probe") == episode, f"episode {episode} was never probed"
    finally:
        stop.set()
        seen = collect(workers, results)
    admitted = [entry for result in seen for entry in result["admitted"]]
    assert sorted(admitted) == [
        (float(episode * (EXPIRY + 1)), True) for episode in range(1, EPISODES + 1)
    ], "exactly one guard got through per episode, each holding the probe permit"
    assert sum(result["refused"] for result in seen) > 0
    log = brama.events("probe")
    probes = [e for e in log if e.kind is Kind.FAILURE and e.probe]
    assert len(probes) == EPISODES
    assert [e.kind for e in log].count(Kind.FAILURE) == EPISODES + 1
    assert reopened(brama, "probe") == EPISODES
    verify(brama.engine, "probe")
    brama.dispose()


def test_each_transition_is_announced_exactly_once_across_processes(
    db_url: URL, tmp_path: Path
) -> None:
    context = multiprocessing.get_context("spawn")
    seconds = context.Value("d", 0.0)
    brama = Brama(url_of(db_url), clock=guard_workers.ticking_clock(seconds))
    brama.register("flaky", failure_threshold=2, expiry=0.03)
    path = tmp_path / "announced.txt"
    path.touch()
    workers, results = start_fleet(
        guard_workers.guard_with_listener,
        (url_of(db_url), "flaky", seconds, str(path), 60),
        PROCESSES,
    )
    seen = collect(workers, results)
    announced = Counter(int(line) for line in path.read_text().split())
    logged = [e for e in brama.events("flaky") if e.kind is Kind.TRANSITION]
    assert len(logged) >= 10, "the mix made the circuit move many times"
    assert {e.cause for e in logged} >= {"report", "expiry"}
    assert sorted(announced) == [e.id for e in logged], "every transition was announced"
    assert set(announced.values()) == {1}, "none was announced twice"
    per_process = [set(ids) for ids in seen]
    assert sum(len(ids) for ids in per_process) == len(logged)
    assert sum(1 for ids in per_process if ids) >= 2, "several processes announced"
    verify(brama.engine, "flaky")
    brama.dispose()


def test_register_true_racing_processes_registers_once(db_url: URL) -> None:
    brama = Brama(url_of(db_url))
    workers, results = start_fleet(
        guard_workers.guard_registering, (url_of(db_url), "fresh", 10), PROCESSES
    )
    seen = collect(workers, results)
    assert [result["ran"] for result in seen] == [10] * PROCESSES
    status = brama.status("fresh")
    assert (status.failure_threshold, status.expiry) == (1000, 30)
    assert status.total_successes == 10 * PROCESSES
    assert [e.kind for e in brama.events("fresh")].count(Kind.REGISTERED) == 1
    verify(brama.engine, "fresh")
    brama.dispose()


def test_register_true_from_processes_never_resets_an_open_circuit(db_url: URL) -> None:
    brama = Brama(url_of(db_url))
    brama.register("tripped", failure_threshold=2, expiry=3600)
    brama.failure("tripped")
    brama.failure("tripped")
    workers, results = start_fleet(
        guard_workers.guard_registering, (url_of(db_url), "tripped", 3), PROCESSES
    )
    seen = collect(workers, results)
    assert [result["refused"] for result in seen] == [3] * PROCESSES
    status = brama.status("tripped")
    assert status.state is State.OPEN
    assert (status.failure_threshold, status.expiry, status.failure_count) == (2, 3600, 2)
    assert [e.kind for e in brama.events("tripped")].count(Kind.REGISTERED) == 1
    brama.dispose()
