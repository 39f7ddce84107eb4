"""The records the public API returns: a connection's status and a logged event."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from brama_sql.circuit import Cause, Kind, State


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

    @property
    def available(self) -> bool:
        """Whether calls may go through: every state but ``open``."""
        return self.state is not State.OPEN


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
