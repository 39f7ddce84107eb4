"""Code that runs in the processes of the guard and listener fleet tests (a module of its own
so that spawned processes can import it). Each worker makes its own :class:`Brama`, as a
separate host would, waits at a barrier so that all start together, and sends what it saw
back on a queue.

Time comes from a clock shared by the processes (a ``multiprocessing.Value`` of seconds after
:data:`T0`): the test moves it, or every read moves it on, so that expiries happen without
anyone waiting for them."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

from brama_sql import Brama, CircuitOpenError, Event

T0 = datetime(2032, 2, 3, 4, 5, 6, tzinfo=timezone.utc)
TICK = 0.001
"""How far a ticking clock moves at each read, in seconds."""


class DependencyDown(Exception):
    """What the simulated dependency raises."""


def shared_clock(seconds: Any) -> Callable[[], datetime]:
    """A clock reading ``seconds`` (a shared Value) after :data:`T0`."""
    return lambda: T0 + timedelta(seconds=seconds.value)


def ticking_clock(seconds: Any) -> Callable[[], datetime]:
    """A clock shared by the processes that moves on by :data:`TICK` at every read, so a
    connection's times grow in commit order and expiries elapse as the fleet works."""

    def now() -> datetime:
        with seconds.get_lock():
            seconds.value += TICK
            return T0 + timedelta(seconds=seconds.value)

    return now


def probe_in_threads(
    url: str,
    identifier: str,
    seconds: Any,
    stop: Any,
    threads: int,
    barrier: Any,
    results: Any,
) -> None:
    """``threads`` threads call a failing dependency through ``brama.guard`` until ``stop``
    is set. Sends the clock's value at each admission, and whether it held a probe permit."""
    brama = Brama(url, clock=shared_clock(seconds))
    admitted: list[tuple[float, bool]] = []
    refused = 0
    lock = threading.Lock()

    def work() -> None:
        nonlocal refused
        while not stop.is_set():
            try:
                with brama.guard(identifier) as permit:
                    with lock:
                        admitted.append((seconds.value, permit.probe))
                    raise DependencyDown("connection refused")
            except DependencyDown:
                pass
            except CircuitOpenError:
                with lock:
                    refused += 1
            time.sleep(0.002)  # pacing: 16 callers on 2 cores, not a wait for the expiry

    barrier.wait()
    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    results.put({"admitted": admitted, "refused": refused})
    brama.dispose()


def guard_with_listener(
    url: str,
    identifier: str,
    seconds: Any,
    path: str,
    calls: int,
    barrier: Any,
    results: Any,
) -> None:
    """Make ``calls`` guarded calls that fail half of the time (a random mix), with a
    listener that appends each announced transition's event id to the file at ``path``.
    Sends the ids this process's listener saw."""
    brama = Brama(url, clock=ticking_clock(seconds))
    seen: list[int] = []

    @brama.on_state_change
    def record(event: Event) -> None:
        seen.append(event.id)
        with open(path, "a", encoding="utf-8") as shared:
            shared.write(f"{event.id}\n")

    chance = random.Random()
    barrier.wait()
    for _ in range(calls):
        try:
            with brama.guard(identifier):
                if chance.random() < 0.5:
                    raise DependencyDown("flaky")
        except (DependencyDown, CircuitOpenError):
            pass
    results.put(seen)
    brama.dispose()


def guard_registering(url: str, identifier: str, calls: int, barrier: Any, results: Any) -> None:
    """Make ``calls`` successful guarded calls with ``register=True`` (threshold 1000,
    expiry 30) on a connection that may not exist. Sends how many ran and how many were
    refused."""
    brama = Brama(url)
    ran = refused = 0
    barrier.wait()
    for _ in range(calls):
        try:
            with brama.guard(identifier, register=True, failure_threshold=1000, expiry=30):
                ran += 1
        except CircuitOpenError:
            refused += 1
    results.put({"ran": ran, "refused": refused})
    brama.dispose()
