"""The pure side of options: their JSON form, comparing two sets, the machine's register and
configure steps, and replaying logs that reconfigure a connection."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from brama_sql import circuit as machine
from brama_sql.circuit import INITIAL, Cause, Circuit, Kind, Settings, State
from brama_sql.options import Registration, changes, describe
from brama_sql.records import Event
from brama_sql.replay import ReplayError, replay

NOW = datetime(2031, 5, 1, 8, 0, tzinfo=timezone.utc)
SETTINGS = Settings(failure_threshold=3, expiry=timedelta(seconds=60))
LIMITED = Settings(
    failure_threshold=2,
    expiry=timedelta(seconds=1.5),
    half_open_max_calls=1,
    probe_timeout=timedelta(seconds=0.25),
)


@pytest.mark.parametrize("settings", [SETTINGS, LIMITED])
def test_settings_survive_their_json_form(settings: Settings) -> None:
    assert Settings.from_options(settings.as_options()) == settings
    assert SETTINGS.updated(settings.as_options()) == settings


def test_updated_changes_only_the_named_settings_and_ignores_metadata() -> None:
    assert SETTINGS.updated({"expiry": 5.0, "metadata": {"a": 1}}) == Settings(
        failure_threshold=3, expiry=timedelta(seconds=5)
    )
    assert LIMITED.updated({"half_open_max_calls": None}).half_open_max_calls is None


def test_changes_name_only_what_differs() -> None:
    stored = Registration({"a": 1}, SETTINGS).as_options()
    assert changes(stored, dict(stored)) == {}
    wanted = Registration({"a": 2}, SETTINGS.updated({"failure_threshold": 4})).as_options()
    found = changes(stored, wanted)
    assert found == {
        "old": {"failure_threshold": 3, "metadata": {"a": 1}},
        "new": {"failure_threshold": 4, "metadata": {"a": 2}},
    }
    assert describe(found) == "failure_threshold 3 -> 4, metadata"
    assert changes(stored, {"expiry": 60.0}) == {}


def test_register_records_the_settings_it_starts_with() -> None:
    outcome = machine.register(LIMITED, NOW, "declared")
    assert outcome.circuit == INITIAL
    (event,) = outcome.occurrences
    assert (event.kind, event.reason, event.failure_count) == (Kind.REGISTERED, "declared", 0)
    assert event.details == {"settings": LIMITED.as_options()}


@pytest.mark.parametrize(
    ("circuit", "threshold", "trips"),
    [
        (Circuit(State.CLOSED, 2), 2, True),  # reached exactly: >=
        (Circuit(State.CLOSED, 2), 1, True),
        (Circuit(State.CLOSED, 2), 3, False),
        (INITIAL, 1, False),
        (Circuit(State.OPEN, 5, NOW, 1), 1, False),
        (Circuit(State.HALF_OPEN, 5, NOW, 1), 1, False),
    ],
)
def test_configure_trips_only_a_closed_circuit_that_reached_the_new_threshold(
    circuit: Circuit, threshold: int, trips: bool
) -> None:
    found = {"old": {"failure_threshold": 9}, "new": {"failure_threshold": threshold}}
    outcome = machine.configure(circuit, SETTINGS.updated(found["new"]), NOW, found)
    configured = outcome.occurrences[0]
    assert (configured.kind, configured.details) == (Kind.CONFIGURED, found)
    assert configured.failure_count == circuit.failure_count
    if trips:
        assert outcome.circuit == Circuit(
            State.OPEN, circuit.failure_count, NOW, circuit.episode + 1
        )
        moved = outcome.occurrences[1]
        assert (moved.cause, moved.from_state, moved.to_state) == (
            Cause.CONFIGURED,
            State.CLOSED,
            State.OPEN,
        )
    else:
        assert outcome.circuit == circuit
        assert len(outcome.occurrences) == 1


def _event(number: int, kind: Kind, **fields: object) -> Event:
    values: dict[str, object] = {
        "occurred_at": NOW + timedelta(seconds=number),
        "from_state": None,
        "to_state": None,
        "reason": None,
        "failure_count": 0,
    }
    values.update(fields)
    return Event(id=number, identifier="svc", scope=None, kind=kind, **values)  # type: ignore[arg-type]


def _configured(number: int, old: dict[str, object], new: dict[str, object], count: int) -> Event:
    return _event(number, Kind.CONFIGURED, failure_count=count, details={"old": old, "new": new})


def test_replay_follows_reconfiguration_and_a_trip_it_causes() -> None:
    log = [
        _event(1, Kind.REGISTERED, details={"settings": SETTINGS.as_options()}),
        _event(2, Kind.FAILURE, failure_count=1),
        _event(
            3,
            Kind.TRANSITION,
            occurred_at=NOW + timedelta(seconds=2),
            failure_count=1,
            from_state=State.UNKNOWN,
            to_state=State.CLOSED,
            reason="first failure",
            cause=Cause.REPORT,
        ),
        _configured(4, {"failure_threshold": 3}, {"failure_threshold": 1}, 1),
        _event(
            5,
            Kind.TRANSITION,
            occurred_at=NOW + timedelta(seconds=4),
            failure_count=1,
            from_state=State.CLOSED,
            to_state=State.OPEN,
            reason="failure threshold lowered",
            cause=Cause.CONFIGURED,
        ),
    ]
    assert replay(log, SETTINGS) == Circuit(State.OPEN, 1, NOW + timedelta(seconds=4), 1)
    with pytest.raises(ReplayError):
        replay(log[:-1], SETTINGS)  # the machine expects the trip


def test_replay_refuses_a_reconfiguration_from_settings_the_connection_did_not_have() -> None:
    log = [
        _event(1, Kind.REGISTERED, details={"settings": SETTINGS.as_options()}),
        _configured(2, {"failure_threshold": 7}, {"failure_threshold": 8}, 0),
    ]
    with pytest.raises(ReplayError, match="configured from"):
        replay(log, SETTINGS)
    with pytest.raises(ReplayError, match="changed nothing"):
        replay([log[0], _configured(2, {}, {}, 0)], SETTINGS)


def test_a_legacy_registration_starts_from_the_final_settings_with_old_values_put_back() -> None:
    final = SETTINGS.updated({"failure_threshold": 2, "expiry": 5.0})
    log = [
        _event(1, Kind.REGISTERED),  # logged before registrations recorded their settings
        _configured(2, {"failure_threshold": 3}, {"failure_threshold": 4}, 0),
        _configured(
            3, {"failure_threshold": 4, "expiry": 60.0}, {"failure_threshold": 2, "expiry": 5.0}, 0
        ),
    ]
    assert replay(log, final) == INITIAL
