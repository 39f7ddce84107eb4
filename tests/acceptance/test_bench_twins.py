"""The benchmark's hand-written twins of ``status()`` and ``connections()`` do the same logical
work as brama_sql: on the connections the benchmark seeds, and on open, half-open and
forced-open circuits with and without backoff, every one of the 31 fields of a
``ConnectionStatus`` they give equals brama_sql's; on every dialect, through SQLAlchemy Core
and through the bare driver."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from freezegun import freeze_time
from sqlalchemy.engine import URL

from bench.fleet import HOT_NAME, SCOPE, idle_names, seed, spread_names, status_names
from bench.plan import SHORT
from bench.twins import CoreTwin, DriverTwin, Twin, TwinError
from brama_sql import Brama, ConnectionStatus, State

FIELDS = [field.name for field in dataclasses.fields(ConnectionStatus)]
T0 = datetime(2031, 5, 6, 7, 8, 9, tzinfo=timezone.utc)


@pytest.fixture(params=["core", "driver"])
def make_twin(request: pytest.FixtureRequest) -> Iterator[Callable[[URL], Twin]]:
    """A factory of the twin under test (closed afterwards)."""
    made: list[Twin] = []

    def make(url: URL) -> Twin:
        twin: Twin = CoreTwin(url) if request.param == "core" else DriverTwin(url)
        made.append(twin)
        return twin

    yield make
    for twin in made:
        twin.close()


def differences(twin: dict[str, Any], brama: ConnectionStatus) -> list[str]:
    """The fields where the twin's status differs from brama_sql's, each with both values."""
    expected = dataclasses.asdict(brama)
    assert list(expected) == FIELDS
    return [
        f"{brama.identifier}.{name}: twin {twin.get(name, '<missing>')!r}, brama {expected[name]!r}"
        for name in sorted(set(FIELDS) | set(twin))
        if name not in twin or name not in expected or twin[name] != expected[name]
    ]


def test_the_twins_give_every_field_of_the_benchmarks_statuses(
    blank_url: URL, make_twin: Callable[[URL], Twin]
) -> None:
    seed(blank_url, SHORT)
    brama = Brama(blank_url)
    twin = make_twin(blank_url)
    names = [HOT_NAME, *spread_names(SHORT), *status_names(SHORT), *idle_names(SHORT)]
    try:
        with freeze_time(datetime.now(timezone.utc)):
            listed = twin.connections()
            expected = brama.connections()
            assert [status["identifier"] for status in listed] == [s.identifier for s in expected]
            assert len(listed) == SHORT.fleet
            wrong = [
                wrong
                for mine, theirs in zip(listed, expected, strict=True)
                for wrong in differences(mine, theirs)
            ]
            for name in names:
                wrong += differences(twin.status(name), brama.status(name, scope=SCOPE))
        assert wrong == []
        states = {status.state for status in expected}
        assert states == {State.CLOSED, State.UNKNOWN}, "the benchmark's circuits"
        assert {len(status) for status in listed} == {len(FIELDS)} == {31}
    finally:
        brama.dispose()


def test_the_twins_follow_open_periods_with_and_without_backoff(
    brama: Brama, db_url: URL, make_twin: Callable[[URL], Twin]
) -> None:
    with freeze_time(T0) as clock:
        cases: list[tuple[str, dict[str, Any]]] = [
            ("fixed", {}),
            ("backoff", {"expiry_strategy": "exponential", "backoff_factor": 3.0}),
            ("capped", {"expiry_strategy": "exponential", "max_expiry": 15.0}),
            ("forced", {"probe_timeout": 4.0, "half_open_max_calls": 2}),
        ]
        for name, policies in cases:
            brama.register(
                name,
                scope=SCOPE,
                failure_threshold=1,
                expiry=10,
                metadata={"n": name},
                **policies,
            )
            brama.failure(name, scope=SCOPE, reason="down")
        brama.force_open("forced", scope=SCOPE)
        clock.tick(timedelta(seconds=11))  # every open period has elapsed: probes fail
        for name in ("backoff", "capped"):
            assert brama.available(name, scope=SCOPE)
            brama.failure(name, scope=SCOPE, reason="probe failed")
        twin = make_twin(db_url)
        seen: set[tuple[str, State]] = set()
        wrong: list[str] = []
        for seconds in (1, 15, 25, 30):  # 12, 27, 52 and 82 s after T0
            clock.tick(timedelta(seconds=seconds))
            for mine, theirs in zip(twin.connections(), brama.connections(), strict=True):
                wrong += differences(mine, theirs)
                wrong += differences(twin.status(theirs.identifier), theirs)
                seen.add((theirs.identifier, theirs.state))
    assert wrong == []
    assert seen >= {
        ("fixed", State.HALF_OPEN),
        ("backoff", State.OPEN),
        ("backoff", State.HALF_OPEN),
        ("capped", State.OPEN),
        ("capped", State.HALF_OPEN),
        ("forced", State.FORCED_OPEN),
    }
    assert brama.status("backoff", scope=SCOPE).current_expiry == 30.0
    assert brama.status("capped", scope=SCOPE).current_expiry == 15.0


def test_a_twin_refuses_a_rate_window_it_does_not_count(
    brama: Brama, db_url: URL, make_twin: Callable[[URL], Twin]
) -> None:
    brama.register("rated", scope=SCOPE, failure_rate_threshold=0.5)
    brama.failure("rated", scope=SCOPE)
    assert brama.status("rated", scope=SCOPE).window_calls == 1
    twin = make_twin(db_url)
    with pytest.raises(TwinError, match="rate policy"):
        twin.status("rated")
    with pytest.raises(TwinError, match="rate policy"):
        twin.connections()
