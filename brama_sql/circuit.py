"""The circuit state machine: pure functions, no I/O, no clock.

Every function takes the current :class:`Circuit`, the connection's :class:`Settings` and the
instant ``now`` and returns an :class:`Outcome`: the next circuit and the events that explain the
step, in the order they must be logged. The storage layer calls these functions while it holds
the connection's row lock; :mod:`brama_sql.replay` calls the same functions to check a log.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta


class State(str, enum.Enum):
    """The state of a circuit. Compares equal to its string value."""

    UNKNOWN = "unknown"
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"

    def __str__(self) -> str:
        return self.value


class Kind(str, enum.Enum):
    """What an event records."""

    REGISTERED = "registered"
    SUCCESS = "success"
    FAILURE = "failure"
    TRANSITION = "transition"
    UNREGISTERED = "unregistered"
    REMOVED = "removed"

    def __str__(self) -> str:
        return self.value


class Cause(str, enum.Enum):
    """What made a transition happen (logged with every ``transition`` event)."""

    REPORT = "report"
    EXPIRY = "expiry"
    MANUAL_OPEN = "manual_open"
    MANUAL_CLOSE = "manual_close"
    MANUAL_RESET = "manual_reset"

    def __str__(self) -> str:
        return self.value


MANUAL_ACTIONS: dict[Cause, tuple[State, str]] = {
    Cause.MANUAL_OPEN: (State.OPEN, "manual open"),
    Cause.MANUAL_CLOSE: (State.CLOSED, "manual close"),
    Cause.MANUAL_RESET: (State.CLOSED, "manual reset"),
}
"""Each manual action: the state it forces and its default reason."""


@dataclass(frozen=True)
class Settings:
    """The per-connection options that drive the state machine."""

    failure_threshold: int
    expiry: timedelta


@dataclass(frozen=True)
class Circuit:
    """What the row of a connection stores about its circuit."""

    state: State
    failure_count: int = 0
    opened_at: datetime | None = None

    def expires_at(self, settings: Settings) -> datetime | None:
        """The instant an open circuit becomes half-open, or ``None`` when it is not open."""
        if self.state is not State.OPEN or self.opened_at is None:
            return None
        return self.opened_at + settings.expiry


@dataclass(frozen=True)
class Occurrence:
    """An event the machine asks to log (the storage adds ids and identity)."""

    kind: Kind
    occurred_at: datetime
    failure_count: int
    from_state: State | None = None
    to_state: State | None = None
    reason: str | None = None
    cause: Cause | None = None


@dataclass(frozen=True)
class Outcome:
    """The next circuit and the events that lead to it, oldest first."""

    circuit: Circuit
    occurrences: tuple[Occurrence, ...] = ()

    def then(self, step: Callable[[Circuit], Outcome]) -> Outcome:
        """Apply ``step`` to this outcome's circuit and concatenate the events."""
        following = step(self.circuit)
        return Outcome(following.circuit, self.occurrences + following.occurrences)


INITIAL = Circuit(State.UNKNOWN)
"""A freshly registered connection: nothing is known about it yet."""


def is_available(state: State) -> bool:
    """Whether calls may go through in ``state``: all but ``open``."""
    return state is not State.OPEN


def current(circuit: Circuit, settings: Settings, now: datetime) -> Circuit:
    """The circuit as it is at ``now``, with a due expiry applied (for reads, which never write)."""
    return expire(circuit, settings, now).circuit


def expire(circuit: Circuit, settings: Settings, now: datetime) -> Outcome:
    """Move an open circuit whose expiry has elapsed to half-open.

    The transition is dated at the instant the expiry elapsed, not at ``now``.
    """
    expires_at = circuit.expires_at(settings)
    if expires_at is None or now < expires_at:
        return Outcome(circuit)
    half_open = replace(circuit, state=State.HALF_OPEN)
    event = _transition(circuit, half_open, expires_at, Cause.EXPIRY, "expiry elapsed")
    return Outcome(half_open, (event,))


def record(
    circuit: Circuit, settings: Settings, kind: Kind, now: datetime, reason: str | None = None
) -> Outcome:
    """Apply a ``success`` or ``failure`` report made at ``now``.

    Call :func:`expire` first: a report never applies an expiry itself.
    """
    if kind is Kind.SUCCESS:
        return _record_success(circuit, now, reason)
    if kind is Kind.FAILURE:
        return _record_failure(circuit, settings, now, reason)
    raise ValueError(f"not a report: {kind!r}")


def _record_success(circuit: Circuit, now: datetime, reason: str | None) -> Outcome:
    report = Occurrence(Kind.SUCCESS, now, 0, reason=reason)
    after = replace(circuit, failure_count=0)
    if circuit.state is State.OPEN:
        # A late result: counted and logged, the circuit stays open and keeps its timer.
        return Outcome(after, (report,))
    if circuit.state is State.CLOSED:
        return Outcome(after, (report,))
    closed = replace(after, state=State.CLOSED)
    cause_reason = "probe succeeded" if circuit.state is State.HALF_OPEN else "first success"
    return Outcome(closed, (report, _transition(circuit, closed, now, Cause.REPORT, cause_reason)))


def _record_failure(
    circuit: Circuit, settings: Settings, now: datetime, reason: str | None
) -> Outcome:
    count = circuit.failure_count + 1
    report = Occurrence(Kind.FAILURE, now, count, reason=reason)
    after = replace(circuit, failure_count=count)
    if circuit.state is State.OPEN:
        return Outcome(after, (report,))
    if circuit.state is State.HALF_OPEN:
        reopened = replace(after, state=State.OPEN, opened_at=now)
        event = _transition(circuit, reopened, now, Cause.REPORT, "probe failed")
        return Outcome(reopened, (report, event))
    if count >= settings.failure_threshold:
        opened = replace(after, state=State.OPEN, opened_at=now)
        event = _transition(circuit, opened, now, Cause.REPORT, "failure threshold reached")
        return Outcome(opened, (report, event))
    if circuit.state is State.UNKNOWN:
        closed = replace(after, state=State.CLOSED)
        return Outcome(closed, (report, _transition(circuit, closed, now, Cause.REPORT, "first failure")))
    return Outcome(after, (report,))


def force(circuit: Circuit, action: Cause, now: datetime, reason: str | None = None) -> Outcome:
    """Apply a manual ``open``, ``close`` or ``reset``: always exactly one transition event.

    ``open`` stamps ``opened_at = now``; ``close`` and ``reset`` zero the failure count.
    """
    if action not in MANUAL_ACTIONS:
        raise ValueError(f"not a manual action: {action!r}")
    target, default_reason = MANUAL_ACTIONS[action]
    if target is State.OPEN:
        forced = replace(circuit, state=State.OPEN, opened_at=now)
    else:
        forced = replace(circuit, state=State.CLOSED, failure_count=0)
    event = _transition(circuit, forced, now, action, reason or default_reason)
    return Outcome(forced, (event,))


def _transition(
    before: Circuit, after: Circuit, at: datetime, cause: Cause, reason: str
) -> Occurrence:
    return Occurrence(
        Kind.TRANSITION,
        at,
        after.failure_count,
        from_state=before.state,
        to_state=after.state,
        reason=reason,
        cause=cause,
    )
