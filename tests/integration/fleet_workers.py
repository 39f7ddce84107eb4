"""Code that runs in the processes of the fleet tests (a module of its own so that spawned
processes can import it). Each worker makes its own :class:`Brama`, as a separate host would,
waits at a barrier so that all start together, and sends what it saw back on a queue."""

from __future__ import annotations

import time
from typing import Any

from freezegun import freeze_time

from brama_sql import AlreadyRegisteredError, Brama


class DependencyDown(Exception):
    """What the simulated dependency raises."""


def failing_dependency() -> None:
    """A dependency that always fails."""
    raise DependencyDown("connection refused")


def report_failures(url: str, identifier: str, count: int, barrier: Any, results: Any) -> None:
    """Report ``count`` failures as fast as possible."""
    brama = Brama(url)
    barrier.wait()
    for _ in range(count):
        brama.failure(identifier, reason="load")
    results.put(count)
    brama.dispose()


def attempt_calls(url: str, identifier: str, attempts: int, barrier: Any, results: Any) -> None:
    """Ask ``available()``, call the failing dependency, report the failure; stop when refused.

    Sends a dict: the caller's actor, the wall-clock times at which each granted check began,
    the time each report returned, and the transitions its reports returned.
    """
    brama = Brama(url)
    checks_granted: list[float] = []
    reports_done: list[float] = []
    caused: list[tuple[str, str]] = []
    barrier.wait()
    for _ in range(attempts):
        asked_at = time.time()
        if not brama.available(identifier):
            break
        checks_granted.append(asked_at)
        try:
            failing_dependency()
        except DependencyDown as error:
            transition = brama.failure(identifier, reason=str(error))
            if transition is not None:
                caused.append((transition.from_state.value, transition.to_state.value))
        reports_done.append(time.time())
    results.put(
        {
            "actor": brama.actor(),
            "granted": checks_granted,
            "reported": reports_done,
            "caused": caused,
        }
    )
    brama.dispose()


def ask_available_at(url: str, identifier: str, instant: str, barrier: Any, results: Any) -> None:
    """At the frozen ``instant`` (ISO 8601), ask ``available()`` once."""
    brama = Brama(url)
    with freeze_time(instant):
        barrier.wait()
        answer = brama.available(identifier)
    results.put((brama.actor(), answer))
    brama.dispose()


def register_once(url: str, identifier: str, barrier: Any, results: Any) -> None:
    """Register ``identifier``; send ``"registered"`` or ``"already"``."""
    brama = Brama(url)
    barrier.wait()
    try:
        brama.register(identifier, metadata={"by": brama.actor()})
        results.put("registered")
    except AlreadyRegisteredError:
        results.put("already")
    brama.dispose()


def restart_and_report(url: str, identifier: str, failures: int, results: Any) -> None:
    """A process that starts, registers (exist_ok) a connection others built, and reports."""
    brama = Brama(url)
    status = brama.register(identifier, exist_ok=True, failure_threshold=3)
    for _ in range(failures):
        brama.failure(identifier)
    results.put(status.failure_count)
    brama.dispose()


def report_on_declared(url: str, identifier: str, count: int, barrier: Any, results: Any) -> None:
    """Declare ``identifier`` (never registered) and report ``count`` failures on it at once."""
    brama = Brama(url, connections={identifier: {"failure_threshold": 1_000_000}})
    barrier.wait()
    for _ in range(count):
        brama.failure(identifier, reason="load")
    results.put(count)
    brama.dispose()
