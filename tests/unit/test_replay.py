"""brama_sql.replay: a log the state machine wrote replays to its circuit; a tampered one raises."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timedelta, timezone

import pytest

from brama_sql import circuit as machine
from brama_sql.circuit import INITIAL, Cause, Circuit, Kind, Occurrence, Outcome, Settings, State
from brama_sql.errors import BramaError
from brama_sql.records import Event
from brama_sql.replay import ReplayError, replay

START = datetime(2024, 3, 1, 12, 0, 0, tzinfo=timezone.utc)
SETTINGS = Settings(failure_threshold=3, expiry=timedelta(seconds=60))
EVENT_FIELDS = {f.name for f in fields(Event)}


@dataclass
class Recorder:
    """Writes a connection's log the way brama_sql.store does, without a database.

    Every change applies a due expiry first and then its own step
    (``machine.expire(...).then(step)``); each occurrence becomes an :class:`Event` with the
    next id.
    """

    now: datetime = START
    circuit: Circuit | None = None
    log: list[Event] = field(default_factory=list)

    def advance(self, seconds: float) -> Recorder:
        """Move the clock forward."""
        self.now += timedelta(seconds=seconds)
        return self

    def register(self) -> Recorder:
        """A new connection in ``unknown``."""
        self.circuit = INITIAL
        self._append([Occurrence(Kind.REGISTERED, self.now, 0)])
        return self

    def success(self, reason: str | None = None) -> Recorder:
        """Report a success."""
        return self._change(lambda c: machine.record(c, SETTINGS, Kind.SUCCESS, self.now, reason))

    def failure(self, reason: str | None = None) -> Recorder:
        """Report a failure."""
        return self._change(lambda c: machine.record(c, SETTINGS, Kind.FAILURE, self.now, reason))

    def force(self, action: Cause, reason: str | None = None) -> Recorder:
        """A manual open, close or reset."""
        return self._change(lambda c: machine.force(c, action, self.now, reason))

    def farewell(self, kind: Kind) -> Recorder:
        """``unregistered`` or ``removed``, after a due expiry is persisted."""
        assert self.circuit is not None
        expired = machine.expire(self.circuit, SETTINGS, self.now)
        farewell = Occurrence(kind, self.now, expired.circuit.failure_count)
        self._append([*expired.occurrences, farewell])
        self.circuit = None
        return self

    def _change(self, step: Callable[[Circuit], Outcome]) -> Recorder:
        assert self.circuit is not None
        outcome = machine.expire(self.circuit, SETTINGS, self.now).then(step)
        self.circuit = outcome.circuit
        self._append(list(outcome.occurrences))
        return self

    def _append(self, occurrences: list[Occurrence]) -> None:
        for occurrence in occurrences:
            # Like the storage: every column the occurrence has, plus id and identity.
            columns = {
                name: getattr(occurrence, name)
                for name in EVENT_FIELDS
                if hasattr(occurrence, name)
            }
            self.log.append(
                Event(id=len(self.log) + 1, identifier="payments-api", scope=None, **columns)
            )


def _row(circuit: Circuit | None) -> tuple[State, int, datetime | None] | None:
    """What the connection row stores: state, failure_count, opened_at (None: no row)."""
    if circuit is None:
        return None
    return (circuit.state, circuit.failure_count, circuit.opened_at)


def _tripped() -> Recorder:
    """Registered, then three failures: open since the third one."""
    return Recorder().register().failure().advance(1).failure().advance(1).failure("timeout")


# -- logs the machine wrote ------------------------------------------------------------------


def test_empty_log_means_no_connection() -> None:
    """Nothing logged: nothing registered."""
    assert replay([], SETTINGS) is None


def test_registration_alone_replays_to_unknown() -> None:
    """A fresh connection is unknown with nothing counted."""
    recorder = Recorder().register()

    assert _row(replay(recorder.log, SETTINGS)) == (State.UNKNOWN, 0, None)


def test_full_episode_replays_to_the_final_circuit() -> None:
    """Trip, late report, expiry, failed probe, second expiry, successful probe."""
    recorder = _tripped().advance(5).success("late")
    opened_at = recorder.now - timedelta(seconds=5)
    assert _row(recorder.circuit) == (State.OPEN, 0, opened_at)
    recorder.advance(60).failure("probe failed").advance(120).success("recovered")

    result = replay(recorder.log, SETTINGS)

    assert result is not None
    assert _row(result) == _row(recorder.circuit)
    assert result.state is State.CLOSED
    expiries = [e for e in recorder.log if e.cause is Cause.EXPIRY]
    assert len(expiries) == 2


@pytest.mark.parametrize("farewell", [Kind.UNREGISTERED, Kind.REMOVED])
def test_replay_after_unregistered_or_removed_is_none(farewell: Kind) -> None:
    """A connection that was unregistered or removed has no circuit."""
    recorder = _tripped().farewell(farewell)

    assert replay(recorder.log, SETTINGS) is None


@pytest.mark.parametrize("farewell", [Kind.UNREGISTERED, Kind.REMOVED])
def test_re_registration_starts_a_fresh_circuit(farewell: Kind) -> None:
    """After unregistered/removed, a new registered event starts from unknown again."""
    recorder = _tripped().advance(10).farewell(farewell).advance(1).register().failure()

    result = replay(recorder.log, SETTINGS)

    assert _row(result) == (State.CLOSED, 1, None)


def test_removal_of_an_expired_circuit_logs_the_expiry_first_and_replays() -> None:
    """cleanup() of a circuit whose expiry elapsed: expiry transition, then removed."""
    recorder = _tripped().advance(3600).farewell(Kind.REMOVED)
    kinds = [(e.kind, e.cause) for e in recorder.log[-2:]]
    assert kinds == [(Kind.TRANSITION, Cause.EXPIRY), (Kind.REMOVED, None)]

    assert replay(recorder.log, SETTINGS) is None
    recorder.register().success()
    assert _row(replay(recorder.log, SETTINGS)) == (State.CLOSED, 0, None)


@pytest.mark.parametrize("action", [Cause.MANUAL_OPEN, Cause.MANUAL_CLOSE, Cause.MANUAL_RESET])
def test_manual_transition_with_a_custom_reason_replays(action: Cause) -> None:
    """A manual action's reason is the operator's, not the machine's default; replay accepts it."""
    recorder = Recorder().register().failure().advance(1).force(action, "maintenance window")

    assert recorder.log[-1].reason == "maintenance window"
    result = replay(recorder.log, SETTINGS)
    assert _row(result) == _row(recorder.circuit)


def test_manual_no_op_transitions_replay() -> None:
    """close on closed and open on open still log one transition each, and replay."""
    recorder = Recorder().register().success()
    recorder.force(Cause.MANUAL_CLOSE).force(Cause.MANUAL_RESET, "again")
    recorder.advance(1).force(Cause.MANUAL_OPEN).advance(1).force(Cause.MANUAL_OPEN, "still")

    result = replay(recorder.log, SETTINGS)

    assert _row(result) == (State.OPEN, 0, recorder.now)


# -- tampered logs ---------------------------------------------------------------------------


def _without(log: list[Event], position: int) -> list[Event]:
    return log[:position] + log[position + 1 :]


def _index(log: list[Event], match: Callable[[Event], bool]) -> int:
    """The position of the first event that ``match`` accepts."""
    return next(i for i, event in enumerate(log) if match(event))


def _missing_transition() -> list[Event]:
    """The unknown -> closed transition of the first success is gone; a failure follows."""
    log = Recorder().register().success().advance(1).failure().log
    return _without(log, _index(log, lambda e: e.kind is Kind.TRANSITION))


def _wrong_failure_count() -> list[Event]:
    """The second failure claims a count of 5 instead of 2."""
    log = Recorder().register().failure().failure().log
    last = len(log) - 1
    return [*log[:last], replace(log[last], failure_count=5)]


def _missing_expiry_before_report() -> list[Event]:
    """The circuit expired, but the open -> half_open transition is missing before the probe."""
    log = _tripped().advance(61).success().log
    return _without(log, _index(log, lambda e: e.cause is Cause.EXPIRY))


def _missing_expiry_before_manual() -> list[Event]:
    """The expiry is missing before a manual close."""
    log = _tripped().advance(61).force(Cause.MANUAL_CLOSE).log
    return _without(log, _index(log, lambda e: e.cause is Cause.EXPIRY))


def _missing_expiry_before_unregistered() -> list[Event]:
    """The expiry is missing before the connection was unregistered."""
    log = _tripped().advance(61).farewell(Kind.UNREGISTERED).log
    return _without(log, _index(log, lambda e: e.cause is Cause.EXPIRY))


def _expiry_dated_when_written() -> list[Event]:
    """The expiry transition carries the time it was written, not the instant it elapsed."""
    log = _tripped().advance(500).success().log
    position = _index(log, lambda e: e.cause is Cause.EXPIRY)
    written = log[position + 1].occurred_at
    return [*log[:position], replace(log[position], occurred_at=written), *log[position + 1 :]]


def _early_expiry() -> list[Event]:
    """An expiry transition logged one second before the expiry elapsed."""
    log = _tripped().log
    opened = log[-1]
    early = replace(
        opened,
        id=opened.id + 1,
        occurred_at=opened.occurred_at + SETTINGS.expiry - timedelta(seconds=1),
        from_state=State.OPEN,
        to_state=State.HALF_OPEN,
        reason="expiry elapsed",
        cause=Cause.EXPIRY,
    )
    return [*log, early]


def _event_before_registration() -> list[Event]:
    """The log starts with a report: the registered event is gone."""
    return Recorder().register().failure().log[1:]


def _event_after_unregistered() -> list[Event]:
    """A report after unregistered, without a new registration."""
    log = Recorder().register().farewell(Kind.UNREGISTERED).register().success().log
    assert log[2].kind is Kind.REGISTERED
    return _without(log, 2)


def _ends_before_expected_transition() -> list[Event]:
    """The transition that the third failure caused (closed -> open) was never written."""
    return _tripped().log[:-1]


def _wrong_target_state() -> list[Event]:
    """The threshold transition claims half_open instead of open."""
    log = _tripped().log
    return [*log[:-1], replace(log[-1], to_state=State.HALF_OPEN)]


def _transition_without_a_cause() -> list[Event]:
    """A report-caused transition with no report before it."""
    log = Recorder().register().success().log
    return _without(log, _index(log, lambda e: e.kind is Kind.SUCCESS))


def _swapped_causal_order() -> list[Event]:
    """The transition is logged before the report that caused it."""
    log = Recorder().register().success().log
    report, transition = log[1], log[2]
    return [log[0], replace(transition, id=report.id), replace(report, id=transition.id)]


TAMPERED = [
    pytest.param(_missing_transition, "machine expects", id="missing-transition"),
    pytest.param(_wrong_failure_count, "machine expects", id="wrong-failure_count"),
    pytest.param(_missing_expiry_before_report, "due expiry", id="missing-expiry-before-report"),
    pytest.param(_missing_expiry_before_manual, "due expiry", id="missing-expiry-before-manual"),
    pytest.param(
        _missing_expiry_before_unregistered, "due expiry", id="missing-expiry-before-unregistered"
    ),
    pytest.param(_expiry_dated_when_written, "machine expects", id="expiry-dated-when-written"),
    pytest.param(_early_expiry, "writes nothing", id="expiry-before-it-elapsed"),
    pytest.param(
        _event_before_registration, "before any registration", id="event-before-registration"
    ),
    pytest.param(
        _event_after_unregistered, "before any registration", id="event-after-unregistered"
    ),
    pytest.param(
        _ends_before_expected_transition, "log ends before", id="ends-before-expected-transition"
    ),
    pytest.param(_wrong_target_state, "machine expects", id="wrong-to_state"),
    pytest.param(_transition_without_a_cause, "nothing caused", id="transition-without-report"),
    pytest.param(_swapped_causal_order, "nothing caused", id="transition-before-its-report"),
]


@pytest.mark.parametrize(("tamper", "message"), TAMPERED)
def test_tampered_log_raises_replay_error(tamper: Callable[[], list[Event]], message: str) -> None:
    """A log the machine would not have written is refused at the first wrong event."""
    log = tamper()

    with pytest.raises(ReplayError, match=message):
        replay(log, SETTINGS)


def test_replay_error_is_a_brama_error() -> None:
    """Callers can catch every brama_sql failure with BramaError."""
    assert issubclass(ReplayError, BramaError)
