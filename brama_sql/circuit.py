"""The circuit state machine: pure functions, no I/O, no clock.

Every function takes the current :class:`Circuit`, the connection's :class:`Settings` and the
instant ``now`` and returns an :class:`Outcome`: the next circuit and the events that explain the
step, in the order they must be logged. The storage layer calls these functions while it holds
the connection's row lock; :mod:`brama_sql.replay` calls the same functions to check a log.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any, TypeVar

from brama_sql.window import Window

Frozen = TypeVar("Frozen")


def replace(instance: Frozen, **changes: Any) -> Frozen:
    """:func:`dataclasses.replace` for this module's frozen records and the tallies, none of
    which has a ``__post_init__`` or a field left out of ``__init__``: a copy of the instance's
    fields with ``changes`` applied, without the per-call look at the class's fields that made
    ``dataclasses.replace`` a tenth of an exclusive report's Python."""
    known: dict[str, Any] = instance.__dataclass_fields__  # type: ignore[attr-defined]
    assert changes.keys() <= known.keys(), changes
    made: Any = object.__new__(type(instance))
    made.__dict__.update(instance.__dict__, **changes)
    return made  # type: ignore[no-any-return]


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
    DISABLED = "disabled"
    """Forced by :meth:`~brama_sql.Brama.disable`: always available, reports counted, never
    trips."""
    FORCED_OPEN = "forced_open"
    """Forced by :meth:`~brama_sql.Brama.force_open`: refuses and never expires, until
    ``close()`` or ``reset()``."""


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
    DISABLE = "disable"
    FORCE_OPEN = "force_open"
    CONFIGURED = "configured"
    """The options changed so that the circuit had to move (a threshold lowered below the
    count already reached)."""


MANUAL_ACTIONS: dict[Cause, tuple[State, str]] = {
    Cause.MANUAL_OPEN: (State.OPEN, "manual open"),
    Cause.MANUAL_CLOSE: (State.CLOSED, "manual close"),
    Cause.MANUAL_RESET: (State.CLOSED, "manual reset"),
    Cause.DISABLE: (State.DISABLED, "disabled"),
    Cause.FORCE_OPEN: (State.FORCED_OPEN, "forced open"),
}
"""Each manual action: the state it forces and its default reason."""


FIXED = "fixed"
EXPONENTIAL = "exponential"
MAX_OPEN_PERIOD = 10 * 365 * 86_400.0
"""The longest open period backoff reaches without ``max_expiry`` (ten years, the longest
duration an option takes): an uncapped period would soon pass the last date there is."""
EXPIRY_STRATEGIES = (FIXED, EXPONENTIAL)
DEFAULT_WINDOW = timedelta(seconds=60)
DEFAULT_MINIMUM_CALLS = 10
DURATIONS = frozenset({"expiry", "probe_timeout", "max_expiry", "window", "slow_call_duration"})
"""The options given in seconds that :class:`Settings` keeps as ``timedelta``."""
POLICY_DEFAULTS: dict[str, Any] = {
    "expiry_strategy": FIXED,
    "backoff_factor": 2.0,
    "max_expiry": None,
    "failure_rate_threshold": None,
    "window": None,
    "minimum_calls": None,
    "slow_call_duration": None,
    "slow_call_rate_threshold": None,
}
"""The options of the backoff and the rate policies, and their values when left out."""
COLUMN_NAMES = {"window": "rate_window"}
"""Options whose ``brama_connections`` column has another name (WINDOW is reserved in MySQL)."""


@dataclass(frozen=True)
class Settings:
    """The per-connection options that drive the state machine."""

    failure_threshold: int
    expiry: timedelta
    half_open_max_calls: int | None = None
    """How many probe permits a half-open circuit hands out at once; ``None``: no limit."""
    probe_timeout: timedelta | None = None
    """How long a permit stays claimed without a report; ``None``: the expiry."""
    expiry_strategy: str = FIXED
    """``"fixed"``: every open period is ``expiry``; ``"exponential"``: each re-opening from
    half-open multiplies the previous one by ``backoff_factor``, up to ``max_expiry``."""
    backoff_factor: float = 2.0
    max_expiry: timedelta | None = None
    """The longest open period of the exponential strategy; ``None``: no cap."""
    failure_rate_threshold: float | None = None
    """Open when the failure share of the window's reports reaches it; ``None``: off."""
    window: timedelta | None = None
    """The span of the rate policies' window; ``None``: :data:`DEFAULT_WINDOW`."""
    minimum_calls: int | None = None
    """Reports the window needs before a rate decides; ``None``: :data:`DEFAULT_MINIMUM_CALLS`."""
    slow_call_duration: timedelta | None = None
    """A call that took longer is slow; ``None``: no call is slow."""
    slow_call_rate_threshold: float | None = None
    """Open when the slow share of the window's reports reaches it; ``None``: off."""

    @property
    def rate_policy(self) -> bool:
        """Whether a failure-rate or slow-call policy is on (the window counts reports)."""
        return self.failure_rate_threshold is not None or self.slow_call_rate_threshold is not None

    @property
    def window_span(self) -> timedelta:
        """The span of the rate policies' window."""
        return DEFAULT_WINDOW if self.window is None else self.window

    @property
    def calls_needed(self) -> int:
        """How many reports the window needs before a rate decides."""
        return DEFAULT_MINIMUM_CALLS if self.minimum_calls is None else self.minimum_calls

    def is_slow(self, duration: float | None) -> bool:
        """Whether a call that took ``duration`` seconds is slow (strictly longer)."""
        limit = self.slow_call_duration
        return duration is not None and limit is not None and duration > limit.total_seconds()

    @property
    def permits_limited(self) -> bool:
        """Whether half-open calls need a claimed permit."""
        return self.half_open_max_calls is not None

    @property
    def permit_lifetime(self) -> timedelta:
        """How long a claimed permit lasts before another caller may claim it."""
        return self.expiry if self.probe_timeout is None else self.probe_timeout

    def as_options(self) -> dict[str, Any]:
        """The settings as JSON values (durations in seconds), as the log records them: the
        policy options only when they differ from their defaults (so a log written before
        they existed reads the same)."""
        full = self.full_options()
        return {
            name: value
            for name, value in full.items()
            if name not in POLICY_DEFAULTS or POLICY_DEFAULTS[name] != value
        }

    def full_options(self) -> dict[str, Any]:
        """Every setting as a JSON value (durations in seconds)."""
        return {
            **self._base_options(),
            "expiry_strategy": self.expiry_strategy,
            "backoff_factor": self.backoff_factor,
            "max_expiry": _seconds(self.max_expiry),
            "failure_rate_threshold": self.failure_rate_threshold,
            "window": _seconds(self.window),
            "minimum_calls": self.minimum_calls,
            "slow_call_duration": _seconds(self.slow_call_duration),
            "slow_call_rate_threshold": self.slow_call_rate_threshold,
        }

    def columns(self) -> dict[str, Any]:
        """Every setting named like its ``brama_connections`` column."""
        return column_values(self.full_options())

    def _base_options(self) -> dict[str, Any]:
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
            if name in DURATIONS and value is not None:
                value = timedelta(seconds=value)
            changes[name] = value
        return replace(self, **changes)


def column_values(options: dict[str, Any]) -> dict[str, Any]:
    """Options (JSON form) named like their ``brama_connections`` columns."""
    return {COLUMN_NAMES.get(name, name): value for name, value in options.items()}


def _seconds(value: timedelta | None) -> float | None:
    return None if value is None else value.total_seconds()


@dataclass(frozen=True)
class Circuit:
    """What the row of a connection stores about its circuit."""

    state: State
    failure_count: int = 0
    opened_at: datetime | None = None
    episode: int = 0
    """How many times the circuit has opened; probe permits belong to one episode."""
    open_period: float | None = None
    """The exponential strategy's open period of the current episode, in seconds (kept
    through half-open, so that a re-opening multiplies it); ``None``: the expiry."""
    window: Window | None = None
    """The rate policies' counters (``None``: empty)."""

    def period(self, settings: Settings) -> timedelta:
        """How long the current (or next) open period lasts."""
        return settings.expiry if self.open_period is None else timedelta(seconds=self.open_period)

    def expires_at(self, settings: Settings) -> datetime | None:
        """The instant an open circuit becomes half-open, or ``None`` when it is not open
        (a forced-open circuit never expires)."""
        if self.state is not State.OPEN or self.opened_at is None:
            return None
        return self.opened_at + self.period(settings)


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
    duration: float | None = None
    """For reports: how long the call took, in seconds, when measured."""
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
    """Whether calls may go through in ``state``: all but ``open`` and ``forced_open``."""
    return state is not State.OPEN and state is not State.FORCED_OPEN


def may_claim_permit(settings: Settings, active_permits: int) -> bool:
    """Whether a half-open circuit with ``active_permits`` unexpired permits grants one more."""
    return permit_free(settings.half_open_max_calls, active_permits)


def permit_free(half_open_max_calls: int | None, active_permits: int) -> bool:
    """Whether a half-open circuit allowing ``half_open_max_calls`` permits (``None``: no
    limit) with ``active_permits`` unexpired ones grants one more."""
    return half_open_max_calls is None or active_permits < half_open_max_calls


def state_at(state: State, opened_at: datetime | None, period: timedelta, now: datetime) -> State:
    """The state at ``now`` of a circuit stored in ``state``, opened at ``opened_at`` for an open
    period of ``period``: an open circuit whose period has elapsed is half-open. The state
    :func:`current` gives, from the few columns ``available()`` reads."""
    if state is State.OPEN and opened_at is not None and now >= opened_at + period:
        return State.HALF_OPEN
    return state


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
    duration: float | None = None,
) -> Outcome:
    """Apply a ``success`` or ``failure`` report made at ``now`` (of a call that took
    ``duration`` seconds, when measured).

    A report while ``open`` or ``forced_open`` is a late result: logged and counted, the state
    and the timer stay. While ``disabled`` it is counted and never moves the circuit.
    In ``half_open`` a report decides the circuit only when it is a probe (permits are
    unlimited, or the reporter ``holds_permit`` of the current episode); any other report is a
    late result. In ``unknown`` and ``closed`` with a rate policy on, the report is counted in
    the window; the circuit opens when the consecutive failures reach ``failure_threshold``,
    or when the window holds at least ``minimum_calls`` reports and the failure share reaches
    ``failure_rate_threshold`` or the slow share ``slow_call_rate_threshold`` (a report
    dated before the window's newest bucket is counted but decides no rate).
    Call :func:`expire` first: a report never applies an expiry itself.
    """
    if kind not in (Kind.SUCCESS, Kind.FAILURE):
        raise ValueError(f"not a report: {kind!r}")
    state = circuit.state
    probe = state is State.HALF_OPEN and (not settings.permits_limited or holds_permit)
    count = 0 if kind is Kind.SUCCESS else circuit.failure_count + 1
    report = Occurrence(kind, now, count, reason=reason, probe=probe, duration=duration)
    after = replace(circuit, failure_count=count)
    if state in (State.OPEN, State.FORCED_OPEN, State.DISABLED) or (
        state is State.HALF_OPEN and not probe
    ):
        return Outcome(after, (report,))
    if state is State.HALF_OPEN:
        if kind is Kind.SUCCESS:
            return _moved(circuit, _closed(after), report, "probe succeeded")
        return _moved(circuit, _opened(after, settings, now, again=True), report, "probe failed")
    late = False
    if settings.rate_policy:
        before = circuit.window or Window()
        late = before.is_behind(now, settings.window_span)
        window = before.adding(
            now, settings.window_span, failed=kind is Kind.FAILURE, slow=settings.is_slow(duration)
        )
        after = replace(after, window=window)
    if kind is Kind.FAILURE and count >= settings.failure_threshold:
        return _moved(circuit, _opened(after, settings, now), report, "failure threshold reached")
    # A report dated before the window's newest bucket (a clock behind another host's, a
    # success written late by a batch or folded after a later one) is counted but does not
    # decide a rate: the window has moved on from its instant.
    tripped = None if late else _rate_reached(after, settings, now)
    if tripped is not None:
        return _moved(circuit, _opened(after, settings, now), report, tripped)
    if state is State.UNKNOWN:
        why = "first success" if kind is Kind.SUCCESS else "first failure"
        return _moved(circuit, replace(after, state=State.CLOSED), report, why)
    return Outcome(after, (report,))


def appendable(before: Circuit, settings: Settings, now: datetime, outcome: Outcome) -> bool:
    """Whether a report's ``outcome`` may be logged without writing the row (under the shared
    lock): it changes nothing but the log, or, with a rate policy on, only adds a success to
    the window that no later report can make trip. That success is then folded into the
    window by the next write under the exclusive lock (:func:`fold_tail`), as replay counts it.

    A success that is not slow never raises a share: with ``f`` failures (``s`` slow calls)
    and ``n`` reports in the window at ``now``, every later count holds at least ``n + 1``
    reports and no more failures, so when ``f / (n + 1)`` and ``s / (n + 1)`` stay under
    their thresholds, neither this success nor the unfolded ones before it trip the circuit.
    """
    if len(outcome.occurrences) != 1:
        return False
    after = outcome.circuit
    if after == before:
        return True
    if not settings.rate_policy or replace(after, window=before.window) != before:
        return False
    (report,) = outcome.occurrences
    if report.kind is not Kind.SUCCESS or settings.is_slow(report.duration):
        return False
    totals = (before.window or Window()).totals(now, settings.window_span)
    calls = totals.calls + 1
    failure_rate, slow_rate = settings.failure_rate_threshold, settings.slow_call_rate_threshold
    if failure_rate is not None and totals.failures / calls >= failure_rate:
        return False
    return slow_rate is None or totals.slow / calls < slow_rate


def fold_tail(
    circuit: Circuit, settings: Settings, tail: list[tuple[datetime, float | None]]
) -> Circuit:
    """The circuit with the successes logged under the shared lock since the row was last
    written (``(occurred_at, duration)``, oldest first) counted, as replay counts them."""
    if not settings.rate_policy:
        return circuit
    for at, duration in tail:
        circuit = record(circuit, settings, Kind.SUCCESS, at, duration=duration).circuit
    return circuit


def _rate_reached(circuit: Circuit, settings: Settings, now: datetime) -> str | None:
    """Why the window opens the circuit at ``now``, or ``None`` when it does not."""
    if not settings.rate_policy or circuit.window is None:
        return None
    totals = circuit.window.totals(now, settings.window_span)
    if totals.calls < settings.calls_needed:
        return None
    failure_rate = settings.failure_rate_threshold
    if failure_rate is not None and totals.failures / totals.calls >= failure_rate:
        return "failure rate reached"
    slow_rate = settings.slow_call_rate_threshold
    if slow_rate is not None and totals.slow / totals.calls >= slow_rate:
        return "slow call rate reached"
    return None


def _moved(before: Circuit, after: Circuit, report: Occurrence, why: str) -> Outcome:
    """A report and the transition it caused, at the report's instant."""
    moved = _transition(before, after, report.occurred_at, Cause.REPORT, why)
    return Outcome(after, (report, moved))


def force(
    circuit: Circuit,
    action: Cause,
    now: datetime,
    reason: str | None = None,
    settings: Settings | None = None,
) -> Outcome:
    """Apply a manual ``open``, ``close``, ``reset``, ``disable`` or ``force_open``: always
    exactly one transition event.

    ``open`` and ``force_open`` stamp ``opened_at = now`` and start a new episode (``open``
    with the first open period of the backoff); ``close`` and ``reset`` zero the failure count
    and the backoff; ``disable`` keeps the count. Every one empties the rate window.
    """
    if action not in MANUAL_ACTIONS:
        raise ValueError(f"not a manual action: {action!r}")
    target, default_reason = MANUAL_ACTIONS[action]
    if target is State.OPEN:
        forced = _opened(circuit, settings, now)
    elif target is State.FORCED_OPEN:
        forced = replace(
            circuit,
            state=State.FORCED_OPEN,
            opened_at=now,
            episode=circuit.episode + 1,
            open_period=None,
            window=None,
        )
    elif target is State.DISABLED:
        forced = replace(circuit, state=State.DISABLED, open_period=None, window=None)
    else:
        forced = replace(_closed(circuit), failure_count=0)
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

    - the rate window is emptied when ``window`` or ``slow_call_duration`` changed (its counts
      were made by other rules) or no rate policy is left.

    Call :func:`expire` with the old settings first.
    """
    renewed = set(changes.get("new", {})) & {"window", "slow_call_duration"}
    if circuit.window is not None and (renewed or not settings.rate_policy):
        circuit = replace(circuit, window=None)
    count = circuit.failure_count
    event = Occurrence(Kind.CONFIGURED, now, count, details=changes)
    if circuit.state is State.CLOSED and count >= settings.failure_threshold:
        opened = _opened(circuit, settings, now)
        moved = _transition(circuit, opened, now, Cause.CONFIGURED, "failure threshold lowered")
        return Outcome(opened, (event, moved))
    expires_at = circuit.expires_at(settings)
    if expires_at is not None and expires_at <= now:
        half_open = replace(circuit, state=State.HALF_OPEN)
        moved = _transition(circuit, half_open, now, Cause.EXPIRY, "expiry elapsed")
        return Outcome(half_open, (event, moved))
    return Outcome(circuit, (event,))


def _opened(
    circuit: Circuit, settings: Settings | None, now: datetime, again: bool = False
) -> Circuit:
    """Open the circuit at ``now``: a new episode, whose probes the old permits cannot settle,
    with an empty rate window. The open period is the expiry (``open_period`` ``None``, so a
    new ``expiry`` applies to it), except under the exponential strategy ``again`` (a failed
    probe): the previous period times ``backoff_factor``, capped at ``max_expiry`` and at
    :data:`MAX_OPEN_PERIOD`."""
    period: float | None = None
    if settings is not None and settings.expiry_strategy == EXPONENTIAL and again:
        period = settings.expiry.total_seconds()
        if circuit.open_period is not None:
            period = circuit.open_period * settings.backoff_factor
        else:
            period = period * settings.backoff_factor
        if settings.max_expiry is not None:
            period = min(period, settings.max_expiry.total_seconds())
        period = min(period, MAX_OPEN_PERIOD)
        period = timedelta(seconds=period).total_seconds()  # whole microseconds, as stored
    return replace(
        circuit,
        state=State.OPEN,
        opened_at=now,
        episode=circuit.episode + 1,
        open_period=period,
        window=None,
    )


def _closed(circuit: Circuit) -> Circuit:
    """The circuit closed: the backoff starts over and the rate window is empty."""
    return replace(circuit, state=State.CLOSED, open_period=None, window=None)


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
