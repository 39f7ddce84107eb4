"""The circuit state machine: pure functions, no I/O, no clock.

Every function takes the current :class:`Circuit`, the connection's :class:`Settings` and the
instant ``now`` and returns an :class:`Outcome`: the next circuit and the events that explain the
step, in the order they must be logged. The storage layer calls these functions while it holds
the connection's row lock; :mod:`brama_sql.replay` calls the same functions to check a log.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from datetime import datetime, timedelta
from typing import Any


class _Text(str, enum.Enum):
    """An enum whose members compare equal to, and print as, their string values."""

    def __str__(self) -> str:
        return str(self.value)


class State(_Text):
    """The state of a circuit. Compares equal to its string value."""

    UNKNOWN = "unknown"
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class Kind(_Text):
    """What an event records."""

    REGISTERED = "registered"
    SUCCESS = "success"
    FAILURE = "failure"
    TRANSITION = "transition"
    CONFIGURED = "configured"
    UNREGISTERED = "unregistered"
    REMOVED = "removed"


class Cause(_Text):
    """What made a transition happen (logged with every ``transition`` event)."""

    REPORT = "report"
    EXPIRY = "expiry"
    MANUAL_OPEN = "manual_open"
    MANUAL_CLOSE = "manual_close"
    MANUAL_RESET = "manual_reset"
    CONFIGURED = "configured"
    """The options changed so that the circuit had to move (a threshold lowered below the
    count already reached)."""


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
    half_open_max_calls: int | None = None
    """How many probe permits a half-open circuit hands out at once; ``None``: no limit."""
    probe_timeout: timedelta | None = None
    """How long a permit stays claimed without a report; ``None``: the expiry."""

    @property
    def permits_limited(self) -> bool:
        """Whether half-open calls need a claimed permit."""
        return self.half_open_max_calls is not None

    @property
    def permit_lifetime(self) -> timedelta:
        """How long a claimed permit lasts before another caller may claim it."""
        return self.expiry if self.probe_timeout is None else self.probe_timeout

    def as_options(self) -> dict[str, Any]:
        """The settings as JSON values (durations in seconds), as the log records them."""
        return {
            "failure_threshold": self.failure_threshold,
            "expiry": self.expiry.total_seconds(),
            "half_open_max_calls": self.half_open_max_calls,
            "probe_timeout": (
                None if self.probe_timeout is None else self.probe_timeout.total_seconds()
            ),
        }

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> Settings:
        """Settings from their :meth:`as_options` form."""
        return cls(failure_threshold=options["failure_threshold"], expiry=timedelta(0)).updated(
            options
        )

    def updated(self, options: dict[str, Any]) -> Settings:
        """These settings with the values of :meth:`as_options` form in ``options`` applied
        (keys that are not settings are ignored)."""
        known = {field.name for field in fields(self)}
        changes: dict[str, Any] = {}
        for name, value in options.items():
            if name not in known:
                continue
            if name in ("expiry", "probe_timeout") and value is not None:
                value = timedelta(seconds=value)
            changes[name] = value
        return replace(self, **changes)


@dataclass(frozen=True)
class Circuit:
    """What the row of a connection stores about its circuit."""

    state: State
    failure_count: int = 0
    opened_at: datetime | None = None
    episode: int = 0
    """How many times the circuit has opened; probe permits belong to one episode."""

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
    probe: bool = False
    """For reports: the report settled a half-open probe and so decided the circuit."""
    details: dict[str, Any] | None = None
    """What a ``registered`` event registered with (``{"settings": ...}``), or what a
    ``configured`` event changed (``{"old": ..., "new": ...}``, only the changed options)."""


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


def may_claim_permit(settings: Settings, active_permits: int) -> bool:
    """Whether a half-open circuit with ``active_permits`` unexpired permits grants one more."""
    limit = settings.half_open_max_calls
    return limit is None or active_permits < limit


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
    circuit: Circuit,
    settings: Settings,
    kind: Kind,
    now: datetime,
    reason: str | None = None,
    holds_permit: bool = False,
) -> Outcome:
    """Apply a ``success`` or ``failure`` report made at ``now``.

    A report while ``open`` is a late result: logged and counted, the state and the timer stay.
    In ``half_open`` a report decides the circuit only when it is a probe (permits are unlimited,
    or the reporter ``holds_permit`` of the current episode); any other report is a late result.
    Call :func:`expire` first: a report never applies an expiry itself.
    """
    if kind not in (Kind.SUCCESS, Kind.FAILURE):
        raise ValueError(f"not a report: {kind!r}")
    state = circuit.state
    probe = state is State.HALF_OPEN and (not settings.permits_limited or holds_permit)
    count = 0 if kind is Kind.SUCCESS else circuit.failure_count + 1
    report = Occurrence(kind, now, count, reason=reason, probe=probe)
    after = replace(circuit, failure_count=count)
    if state is State.OPEN or (state is State.HALF_OPEN and not probe):
        return Outcome(after, (report,))
    if kind is Kind.SUCCESS:
        if state is State.CLOSED:
            return Outcome(after, (report,))
        why = "probe succeeded" if probe else "first success"
        return _moved(circuit, replace(after, state=State.CLOSED), report, why)
    if probe:
        return _moved(circuit, _opened(after, now), report, "probe failed")
    if count >= settings.failure_threshold:
        return _moved(circuit, _opened(after, now), report, "failure threshold reached")
    if state is State.UNKNOWN:
        return _moved(circuit, replace(after, state=State.CLOSED), report, "first failure")
    return Outcome(after, (report,))


def _moved(before: Circuit, after: Circuit, report: Occurrence, why: str) -> Outcome:
    """A report and the transition it caused, at the report's instant."""
    moved = _transition(before, after, report.occurred_at, Cause.REPORT, why)
    return Outcome(after, (report, moved))


def force(circuit: Circuit, action: Cause, now: datetime, reason: str | None = None) -> Outcome:
    """Apply a manual ``open``, ``close`` or ``reset``: always exactly one transition event.

    ``open`` stamps ``opened_at = now``; ``close`` and ``reset`` zero the failure count.
    """
    if action not in MANUAL_ACTIONS:
        raise ValueError(f"not a manual action: {action!r}")
    target, default_reason = MANUAL_ACTIONS[action]
    if target is State.OPEN:
        forced = _opened(circuit, now)
    else:
        forced = replace(circuit, state=State.CLOSED, failure_count=0)
    why = default_reason if reason is None else reason
    event = _transition(circuit, forced, now, action, why)
    return Outcome(forced, (event,))


def register(settings: Settings, now: datetime, reason: str | None = None) -> Outcome:
    """A new connection: the initial circuit and its ``registered`` event, which records the
    settings it starts with."""
    event = Occurrence(
        Kind.REGISTERED, now, 0, reason=reason, details={"settings": settings.as_options()}
    )
    return Outcome(INITIAL, (event,))


def configure(
    circuit: Circuit, settings: Settings, now: datetime, changes: dict[str, Any]
) -> Outcome:
    """Apply new options (``settings`` are the new ones; ``changes`` holds the ``old`` and
    ``new`` values of what changed): one ``configured`` event, then what the new options
    decide at once:

    - a closed circuit whose count reaches a lowered ``failure_threshold`` opens;
    - an open circuit keeps its ``opened_at`` and a new ``expiry`` counts from there; when that
      has already elapsed, it becomes half-open now (dated ``now``, not at the elapsed instant,
      so that the log never goes back in time).

    Call :func:`expire` with the old settings first.
    """
    count = circuit.failure_count
    event = Occurrence(Kind.CONFIGURED, now, count, details=changes)
    if circuit.state is State.CLOSED and count >= settings.failure_threshold:
        opened = _opened(circuit, now)
        moved = _transition(circuit, opened, now, Cause.CONFIGURED, "failure threshold lowered")
        return Outcome(opened, (event, moved))
    expires_at = circuit.expires_at(settings)
    if expires_at is not None and expires_at <= now:
        half_open = replace(circuit, state=State.HALF_OPEN)
        moved = _transition(circuit, half_open, now, Cause.EXPIRY, "expiry elapsed")
        return Outcome(half_open, (event, moved))
    return Outcome(circuit, (event,))


def _opened(circuit: Circuit, now: datetime) -> Circuit:
    """Open the circuit at ``now``: a new episode, whose probes the old permits cannot settle."""
    return replace(circuit, state=State.OPEN, opened_at=now, episode=circuit.episode + 1)


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
