"""The records the public API returns: a connection's status and a logged event."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

from brama_sql.circuit import Cause, Kind, State, is_available


@dataclass(frozen=True)
class ConnectionStatus:
    """A connection's circuit as it is at the moment it was read, with the tallies of its log."""

    identifier: str
    scope: str | None
    state: State
    failure_count: int
    """Consecutive failures since the last success, close or reset."""
    last_failure_time: datetime | None
    last_success_time: datetime | None
    opened_at: datetime | None
    """When the circuit was last opened (by failures or by hand)."""
    metadata: dict[str, Any] = field(hash=False)
    failure_threshold: int
    expiry: float
    """Seconds an open circuit waits before it lets probes through."""
    registered_at: datetime
    state_changed_at: datetime
    total_successes: int
    total_failures: int
    success_rate: float | None
    """``successes / (successes + failures)`` since registration; ``None`` before any report."""
    time_since_state_change: float
    """Seconds from ``state_changed_at`` to the moment of the read."""
    half_open_max_calls: int | None = None
    """How many probes a half-open circuit lets through at once; ``None``: no limit."""
    probe_timeout: float | None = None
    """Seconds a probe permit lasts without a report (the expiry unless set)."""
    expiry_strategy: str = "fixed"
    """``"fixed"`` or ``"exponential"`` (see docs/backoff.md)."""
    backoff_factor: float = 2.0
    max_expiry: float | None = None
    """The cap of the exponential strategy's open period, in seconds; ``None``: no cap."""
    current_expiry: float | None = None
    """Seconds the current open period lasts (open or half-open: the period of this episode,
    grown by the backoff); ``None`` in the other states."""
    next_probe_at: datetime | None = None
    """When an open circuit next admits a probe; ``None`` in the other states (a
    forced-open circuit never does by itself)."""
    failure_rate_threshold: float | None = None
    window: float | None = None
    """Seconds of the rate policies' window as stored (``None``: 60 when a rate is on)."""
    minimum_calls: int | None = None
    """Reports the window needs before a rate decides, as stored (``None``: 10)."""
    slow_call_duration: float | None = None
    slow_call_rate_threshold: float | None = None
    window_calls: int = 0
    """Reports in the rate window at the moment of the read."""
    window_failures: int = 0
    window_slow_calls: int = 0

    @property
    def available(self) -> bool:
        """Whether calls may go through: every state but ``open`` and ``forced_open``."""
        return is_available(self.state)


STATUS_FIELDS = frozenset(status_field.name for status_field in fields(ConnectionStatus))


def connection_status(**values: Any) -> ConnectionStatus:
    """The :class:`ConnectionStatus` of ``values``, one for each of its fields, made without
    its generated ``__init__``: a frozen dataclass's sets each field through
    ``object.__setattr__``, which over these 31 fields costs about as much as the rest of
    building a status from a row. The record is the same one (equal, hashed, pickled and
    ``dataclasses.replace``-d alike), the fields in its ``__dict__``. Raises ``TypeError``
    when ``values`` misses a field or names one it does not have."""
    if values.keys() != STATUS_FIELDS:
        given = set(values)
        raise TypeError(
            f"connection_status() needs every field of ConnectionStatus: missing "
            f"{sorted(STATUS_FIELDS - given)}, unknown {sorted(given - STATUS_FIELDS)}"
        )
    return made_status(values)  # a new dict: the keyword arguments


def made_status(values: dict[str, Any]) -> ConnectionStatus:
    """:func:`connection_status` of ``values`` without checking that they name every field
    (for callers that name them all, as their tests check). The record keeps ``values`` as
    its ``__dict__``: the caller hands it over."""
    status = object.__new__(ConnectionStatus)
    object.__setattr__(status, "__dict__", values)
    return status


@dataclass(frozen=True)
class Event:
    """One row of the append-only event log."""

    id: int
    identifier: str
    scope: str | None
    kind: Kind
    occurred_at: datetime
    from_state: State | None
    to_state: State | None
    reason: str | None
    failure_count: int
    """The connection's consecutive failure count after the event."""
    cause: Cause | None = None
    """For transitions: what caused it (a report, the expiry, a manual action)."""
    probe: bool = False
    """For reports: it was a half-open probe's result, and so it decided the circuit."""
    actor: str | None = None
    """Who wrote the event: :meth:`Brama.actor` of the caller (``host:pid:instance:thread``)."""
    duration: float | None = None
    """For reports: seconds the call took, when measured (guard, decorator, ``duration=``)."""
    details: dict[str, Any] | None = field(default=None, hash=False)
    """``registered``: the options it started with (``{"settings": {...}}``); ``configured``:
    the changed options' ``{"old": {...}, "new": {...}}``; otherwise ``None``."""


@dataclass(frozen=True)
class Transition:
    """A state change that a report caused: what :meth:`Brama.success` and
    :meth:`Brama.failure` return, so the caller whose report tripped (or closed) the circuit
    knows it was that report. Exactly one caller gets each transition."""

    from_state: State
    to_state: State
    occurred_at: datetime
    reason: str | None


@dataclass(frozen=True)
class ConnectionReport:
    """What happened to one registered connection in a report's window (see
    :meth:`Brama.report`): counted from the window's events, never from the whole log."""

    identifier: str
    scope: str | None
    state: State
    """The circuit's state at the end of the window (a due expiry applied, as ``status()``)."""
    reports: int
    """Success and failure reports logged in the window."""
    successes: int
    failures: int
    success_rate: float | None
    """``successes / reports``; ``None`` when the window holds no report."""
    trips: int
    """Transitions to ``open`` in the window (by reports or by hand)."""
    time_open: float
    """Seconds the circuit spent open in the window: each episode from its transition to
    ``open`` (or the window's start, if it was open then) until it left ``open`` (its expiry
    elapsed, or it was closed) or the window's end."""
    longest_open: float
    """Seconds of the longest single open episode within the window (``0.0`` if none)."""
    last_transition_at: datetime | None
    """When the circuit last changed state (at any time, not only in the window)."""
    last_transition_from: State | None
    last_transition_to: State | None
    last_transition_cause: Cause | None
    """The last transition's states and cause; ``None`` when its event was pruned (its time
    stays known) or the circuit never changed state."""
    complete: bool
    """``False`` when :meth:`Brama.prune` deleted events of this connection from within the
    window: the counts and open times cover only the events the log still holds."""


@dataclass(frozen=True)
class Report:
    """:meth:`Brama.report`'s answer: one :class:`ConnectionReport` per registered connection
    (by scope, then identifier) over the window from ``since`` to ``until``."""

    since: datetime
    until: datetime
    """The moment the report was read (the injectable clock's now)."""
    connections: list[ConnectionReport]
