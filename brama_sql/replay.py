"""Replaying a log: the events of a connection, fed in order through the state machine, must
reproduce its row. Operators and tests use :func:`replay` to check that the log explains it."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Connection, Engine

from brama_sql import circuit as machine
from brama_sql.circuit import MANUAL_ACTIONS, Cause, Circuit, Kind, Occurrence, Settings, State
from brama_sql.engine import sqlite_in_transaction
from brama_sql.errors import BramaError
from brama_sql.records import Event
from brama_sql.rows import Identity, circuit_of, event_record, settings_of
from brama_sql.schema import connections, events, stored_scope
from brama_sql.tallies import Tally, transition_key
from brama_sql.window import Window


class ReplayError(BramaError):
    """The log does not follow from the state machine."""


@dataclass
class Checkpoint:
    """Where a replay stands after some event: the circuit (``None`` once the connection was
    unregistered or removed), the settings, and the tally of the events fed so far. Pruning
    stores one on the row for the newest event it deleted; replaying goes on from it."""

    circuit: Circuit | None
    settings: Settings
    tally: Tally = field(default_factory=Tally)

    def as_json(self) -> dict[str, Any]:
        """This checkpoint as JSON (the ``checkpoint`` column)."""
        circuit = self.circuit
        return {
            "circuit": None
            if circuit is None
            else {
                "state": circuit.state.value,
                "failure_count": circuit.failure_count,
                "opened_at": None if circuit.opened_at is None else circuit.opened_at.isoformat(),
                "episode": circuit.episode,
                "open_period": circuit.open_period,
                "window": None if circuit.window is None else circuit.window.as_json(),
            },
            "settings": self.settings.as_options(),
            "tally": self.tally.as_json(),
        }

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> Checkpoint:
        """The checkpoint :meth:`as_json` wrote."""
        found = document.get("circuit")
        circuit = None
        if found is not None:
            opened_at = found.get("opened_at")
            circuit = Circuit(
                State(found["state"]),
                int(found["failure_count"]),
                None if opened_at is None else datetime.fromisoformat(opened_at),
                int(found["episode"]),
                found.get("open_period"),
                Window.from_json(found.get("window")),
            )
        return cls(
            circuit, Settings.from_options(document["settings"]), Tally.from_json(document["tally"])
        )


class Replay:
    """Feeds a connection's events, in id order, through the state machine.

    Starts from ``start`` (a pruning checkpoint), or before any registration. ``settings`` are
    the connection's settings at the end of the log; with ``lookahead`` (the log's later events)
    they serve a registration logged before registrations recorded their settings (see
    :func:`_registered_with`). Raises :class:`ReplayError` at the first event the machine
    would not have written.
    """

    def __init__(
        self,
        settings: Settings,
        start: Checkpoint | None = None,
        lookahead: Sequence[Event] = (),
    ) -> None:
        self.circuit: Circuit | None = None if start is None else start.circuit
        self.settings = settings if start is None else start.settings
        self.tally = Tally() if start is None else start.tally
        self._final = settings
        self._lookahead = lookahead
        self._expected: deque[Occurrence] = deque()

    @property
    def settled(self) -> bool:
        """Whether every event the machine wrote for the last step has been fed."""
        return not self._expected

    def checkpoint(self) -> Checkpoint:
        """Where the replay stands (only meaningful when :attr:`settled`)."""
        return Checkpoint(self.circuit, self.settings, self.tally)

    def feed(self, event: Event) -> None:
        """Replay one more event."""
        seen = _occurrence(event)
        self.tally = self.tally.adding(event.kind, event.occurred_at, _transition(event))
        if self._expected:
            _match(event, seen, self._expected.popleft())
            return
        circuit, current = self.circuit, self.settings
        if event.kind is Kind.REGISTERED:
            self.circuit = machine.INITIAL
            self.settings = _registered_with(event, self._lookahead, self._final)
            self.tally = Tally().adding(event.kind, event.occurred_at)
            return
        if circuit is None:
            raise ReplayError(f"event {event.id} ({event.kind}) before any registration")
        if event.kind in (Kind.UNREGISTERED, Kind.REMOVED):
            _expect_no_expiry(event, circuit, current)
            self.circuit = None
            return
        if event.kind in (Kind.SUCCESS, Kind.FAILURE):
            _expect_no_expiry(event, circuit, current)
            outcome = machine.record(
                circuit,
                current,
                event.kind,
                event.occurred_at,
                event.reason,
                event.probe,
                event.duration,
            )
        elif event.kind is Kind.CONFIGURED:
            _expect_no_expiry(event, circuit, current)
            self.settings = current = _configured(event, current)
            outcome = machine.configure(circuit, current, event.occurred_at, event.details or {})
        elif event.cause is Cause.EXPIRY:
            outcome = machine.expire(circuit, current, event.occurred_at)
        elif event.cause in MANUAL_ACTIONS:
            assert event.cause is not None
            _expect_no_expiry(event, circuit, current)
            outcome = machine.force(circuit, event.cause, event.occurred_at, event.reason, current)
        else:
            raise ReplayError(f"event {event.id}: a {event.cause} transition that nothing caused")
        if not outcome.occurrences:
            raise ReplayError(f"event {event.id}: the machine writes nothing here")
        _match(event, seen, outcome.occurrences[0])
        self._expected.extend(outcome.occurrences[1:])
        self.circuit = outcome.circuit

    def finish(self) -> Checkpoint:
        """Where the whole log leads; raises if it ends before the machine's last step did."""
        if self._expected:
            raise ReplayError(
                f"the log ends before the events the machine expects: {list(self._expected)}"
            )
        return self.checkpoint()


def replay(
    log: Iterable[Event], settings: Settings, start: Checkpoint | None = None
) -> Circuit | None:
    """The circuit the log leads to, or ``None`` when the connection was unregistered or removed.

    ``log`` holds one connection's events in id order (several registrations are fine: each
    ``registered`` starts afresh, with the settings it records), from the first one, or from
    the one after ``start``. ``configured`` events change the settings from there on.
    ``settings`` are the connection's settings at the end of the log; they serve for a
    registration logged before registrations recorded their settings. Raises
    :class:`ReplayError` at the first event the machine would not have written.
    """
    events = list(log)
    replaying = Replay(settings, start, events)
    for event in events:
        replaying.feed(event)
    return replaying.finish().circuit


def _transition(event: Event) -> str | None:
    """The tally key of a transition event (``None`` for the other kinds)."""
    if event.kind is not Kind.TRANSITION:
        return None
    cause = None if event.cause is None else event.cause.value
    to_state = None if event.to_state is None else event.to_state.value
    return transition_key(cause, to_state)


def _registered_with(registration: Event, log: Sequence[Event], final: Settings) -> Settings:
    """The settings ``registration`` started with: as it recorded them, else (a registration
    logged by an older release) the ``final`` settings with the old values of its later
    ``configured`` events in ``log`` put back, newest first."""
    recorded = (registration.details or {}).get("settings")
    if recorded is not None:
        return Settings.from_options(recorded)
    later: list[Event] = []
    for event in log:
        if event.id <= registration.id:
            continue
        if event.kind is Kind.REGISTERED:
            break
        if event.kind is Kind.CONFIGURED:
            later.append(event)
    settings = final
    for event in reversed(later):
        settings = settings.updated((event.details or {}).get("old", {}))
    return settings


def _configured(event: Event, settings: Settings) -> Settings:
    """The settings after a ``configured`` event, which must have changed them from
    ``settings``."""
    details = event.details or {}
    old, new = details.get("old", {}), details.get("new", {})
    if not new:
        raise ReplayError(f"event {event.id}: a configured event that changed nothing")
    stored = settings.full_options()
    if any(name in stored and stored[name] != value for name, value in old.items()):
        raise ReplayError(
            f"event {event.id}: configured from {old}, but the settings were {stored}"
        )
    return settings.updated(new)


def _occurrence(event: Event) -> Occurrence:
    return Occurrence(
        event.kind,
        event.occurred_at,
        event.failure_count,
        from_state=event.from_state,
        to_state=event.to_state,
        reason=event.reason,
        cause=event.cause,
        probe=event.probe,
        duration=event.duration,
        details=event.details,
    )


def _match(event: Event, seen: Occurrence, wanted: Occurrence) -> None:
    if seen.kind is Kind.TRANSITION and wanted.cause is not Cause.REPORT:
        # Manual and expiry transitions: the machine's default reason may have been replaced.
        seen = replace(seen, reason=wanted.reason)
    if seen != wanted:
        raise ReplayError(f"event {event.id} is {seen}, the machine expects {wanted}")


def _expect_no_expiry(event: Event, circuit: Circuit, settings: Settings) -> None:
    if machine.expire(circuit, settings, event.occurred_at).occurrences:
        raise ReplayError(f"event {event.id}: a due expiry was not logged before it")


def verify(
    engine: Engine, identifier: str, scope: str | None = None, settings: Settings | None = None
) -> Circuit | None:
    """Check that a connection's log explains its row; return the replayed circuit.

    Reads the row and the log of its latest registration from one snapshot, replays the log
    (from the row's pruning checkpoint when :meth:`~brama_sql.Brama.prune` deleted its start)
    and compares state, ``failure_count``, ``opened_at``, episode and the tallies (counts, latest
    times, transitions by cause) with the row. The settings come from the row; pass
    ``settings`` for a connection that no longer exists (its log must then end with its
    removal). Raises :class:`ReplayError` on any difference.
    """
    identity = Identity(identifier, scope)
    with _snapshot(engine) as conn:
        row = conn.execute(select(connections).where(identity.where())).one_or_none()
        mine = (events.c.identifier == identifier) & (events.c.scope == stored_scope(scope))
        incarnation = (
            row.id
            if row is not None
            else conn.execute(select(func.max(events.c.connection_id)).where(mine)).scalar()
        )
        after = 0 if row is None else row.pruned_through
        log = [
            event_record(found)
            for found in conn.execute(
                select(events)
                .where(mine, events.c.connection_id == incarnation, events.c.id > after)
                .order_by(events.c.id)
            )
        ]
    if settings is None:
        if row is None:
            raise ReplayError(f"{identifier!r}/{scope!r} has no row: pass the settings it had")
        settings = settings_of(row)
    start = None
    if row is not None and row.checkpoint is not None:
        start = Checkpoint.from_json(row.checkpoint)
    replaying = Replay(settings, start, log)
    for event in log:
        replaying.feed(event)
    reached = replaying.finish()
    stored = None
    if row is not None:
        tail = [(e.occurred_at, e.duration) for e in log if e.id > row.tallied_through]
        stored = machine.fold_tail(circuit_of(row), settings_of(row), tail)
    if reached.circuit != stored:
        raise ReplayError(f"the log leads to {reached.circuit}, the row holds {stored}")
    if row is not None:
        kept = _with_tail(Tally.of_row(row), [e for e in log if e.id > row.tallied_through])
        if reached.tally != kept:
            raise ReplayError(f"the log tallies {reached.tally}, the row holds {kept}")
    return reached.circuit


def _with_tail(tally: Tally, tail: list[Event]) -> Tally:
    """The row's tallies with its tail, which must be healthy successes only."""
    for event in tail:
        if event.kind is not Kind.SUCCESS:
            raise ReplayError(f"event {event.id} ({event.kind}) is after the row's tallies")
    latest = max((event.occurred_at for event in tail), default=None)
    return tally.with_tail(len(tail), latest)


@contextmanager
def _snapshot(engine: Engine) -> Iterator[Connection]:
    """A read transaction that sees one snapshot for all its statements (PostgreSQL's default
    READ COMMITTED would not; SQLite's read transactions and MySQL's default already do)."""
    with engine.connect() as conn:
        if conn.dialect.name in ("postgresql", "mysql"):
            conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            driver = conn.connection.dbapi_connection
            if (
                conn.dialect.name == "sqlite"
                and driver is not None
                and not sqlite_in_transaction(driver)
            ):
                conn.exec_driver_sql("BEGIN")  # pysqlite would run each read on its own
            yield conn
