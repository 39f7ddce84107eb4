"""A guided tour of one circuit: a dependency fails, the circuit trips, waits, probes and recovers.

``brama-sql demo`` runs it; the history it writes stays in the database for ``brama-sql status``
and ``brama-sql events``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from brama_sql.brama import Brama
from brama_sql.circuit import Kind
from brama_sql.errors import BramaError
from brama_sql.records import ConnectionStatus, Event

IDENTIFIER = "payments-api"
SCOPE = "demo"
FAILURE_THRESHOLD = 3
EXPIRY = 1.0
"""Seconds the demo's circuit stays open before it lets a probe through."""
MAX_CALLS = 20
"""A bound on the failing calls, in case the circuit never trips."""

Echo = Callable[[str], None]
Sleep = Callable[[float], None]


class DependencyDown(ConnectionError):
    """What the fake dependency raises while it is down."""


@dataclass
class FakeDependency:
    """A stand-in for a remote payments API that is down until told otherwise."""

    healthy: bool = False
    calls: int = 0

    def charge(self, amount: int) -> str:
        """Pretend to charge ``amount`` cents; raises :class:`DependencyDown` while unhealthy."""
        self.calls += 1
        if not self.healthy:
            raise DependencyDown("timed out after 2.0 s")
        return f"charged {amount} cents"


class _Log:
    """Reads the demo connection's events that were logged since the last look."""

    def __init__(self, brama: Brama, identifier: str, scope: str) -> None:
        self.brama = brama
        self.identifier = identifier
        self.scope = scope
        seen = brama.events(identifier, scope=scope)
        self.last_id = seen[-1].id if seen else 0

    def new(self) -> list[Event]:
        logged = self.brama.events(self.identifier, scope=self.scope)
        fresh = [event for event in logged if event.id > self.last_id]
        if fresh:
            self.last_id = fresh[-1].id
        return fresh


def run(
    brama: Brama,
    echo: Echo = print,
    *,
    sleep: Sleep = time.sleep,
    expiry: float = EXPIRY,
    identifier: str = IDENTIFIER,
    scope: str = SCOPE,
) -> ConnectionStatus:
    """Run the demo on ``brama``'s database, narrating through ``echo``; return the final status.

    ``sleep`` waits out the circuit's ``expiry`` (seconds); tests pass one that moves a fake clock.
    """
    dependency = FakeDependency()
    echo(f"brama_sql demo on {brama.engine.url.render_as_string(hide_password=True)}")
    brama.migrate()
    echo("Schema migrated to the newest revision.")
    log = _Log(brama, identifier, scope)
    if brama.unregister(identifier, scope=scope):
        echo(f"Unregistered {identifier!r} from an earlier run (its history stays in the log).")
    brama.register(
        identifier,
        scope=scope,
        metadata={"url": "https://payments.example.com/v1", "demo": True},
        failure_threshold=FAILURE_THRESHOLD,
        expiry=expiry,
    )
    echo(
        f"Registered {identifier!r} in scope {scope!r}: "
        f"failure_threshold={FAILURE_THRESHOLD}, expiry={expiry:g}s."
    )
    _show_transitions(log, echo)

    echo("")
    echo("1. The payments API is down. Every call fails and is reported.")
    call = 0
    while brama.available(identifier, scope=scope) and call < MAX_CALLS:
        call += 1
        try:
            dependency.charge(1999)
        except DependencyDown as error:
            brama.failure(identifier, scope=scope, reason=f"DependencyDown: {error}")
            count = brama.status(identifier, scope=scope).failure_count
            echo(
                f"   call {call}: failed ({error}); failure reported "
                f"({count}/{FAILURE_THRESHOLD} in a row)"
            )
        _show_transitions(log, echo)
    if brama.available(identifier, scope=scope):
        raise BramaError(f"the demo circuit did not open after {call} failures")
    echo(f"   available() = False: the circuit is open, calls are refused for {expiry:g}s.")

    echo("")
    echo(f"2. Waiting {expiry:g}s for the expiry...")
    sleep(expiry)
    for _ in range(MAX_CALLS):
        if brama.available(identifier, scope=scope):
            break
        sleep(expiry / 10)
    state = brama.status(identifier, scope=scope).state
    echo(
        f"   available() = {brama.available(identifier, scope=scope)}: "
        f"the circuit is {state}, a probe may go through."
    )

    echo("")
    echo("3. The payments API is back. The probe succeeds and is reported.")
    dependency.healthy = True
    result = dependency.charge(1999)
    brama.success(identifier, scope=scope, reason="probe")
    echo(f"   probe: {result}; success reported")
    _show_transitions(log, echo)

    final = brama.status(identifier, scope=scope)
    echo("")
    echo("Final metrics:")
    for line in _metrics(final):
        echo(f"   {line}")
    echo("")
    echo("The history stays in the database. Look at it with:")
    echo("   brama-sql status")
    echo(f"   brama-sql events {identifier} --scope {scope}")
    return final


def _show_transitions(log: _Log, echo: Echo) -> None:
    for event in log.new():
        if event.kind is Kind.TRANSITION:
            when = event.occurred_at.isoformat(sep=" ", timespec="milliseconds")
            change = f"{event.from_state} -> {event.to_state}"
            echo(f"   >> transition {change} ({event.reason}) at {when}")


def _metrics(status: ConnectionStatus) -> list[str]:
    rate = "n/a" if status.success_rate is None else f"{status.success_rate:.1%}"
    return [
        f"state:                   {status.state}",
        f"consecutive failures:    {status.failure_count}",
        f"total successes:         {status.total_successes}",
        f"total failures:          {status.total_failures}",
        f"success rate:            {rate}",
        f"time since state change: {status.time_since_state_change:.3f}s",
        f"state changed at:        {status.state_changed_at.isoformat()}",
    ]
