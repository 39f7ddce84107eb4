"""The opt-in availability cache, on every dialect: available() answered from memory within its
window after this process last read or wrote the circuit, stale about other processes for at
most the window, never about this process's own transitions; expiry applied on time; permits,
reconfiguration, removal and failed writes go back to the database. Time comes from a clock
the test moves; what reached the database is counted on the engine."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import event

from brama_sql import Brama
from brama_sql.errors import ArgumentTypeError, InvalidArgumentError, NotRegisteredError

START = datetime(2031, 9, 1, 6, 0, tzinfo=timezone.utc)
WINDOW = 0.5


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now

    def tick(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@contextmanager
def statements(brama: Brama) -> Iterator[list[str]]:
    """The SQL statements ``brama`` sends while the block runs."""
    sent: list[str] = []

    def record(*args: Any) -> None:
        sent.append(args[2])

    event.listen(brama.engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(brama.engine, "before_cursor_execute", record)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def pair(make_brama: Callable[..., Brama], clock: Clock) -> tuple[Brama, Brama]:
    """A process with the cache, and another one without, on one database."""
    cached = make_brama(clock=clock, availability_cache=WINDOW, failure_threshold=2, expiry=60)
    other = make_brama(clock=clock, failure_threshold=2, expiry=60)
    cached.register("svc")
    cached.success("svc")
    return cached, other


def test_another_process_s_trip_shows_once_the_window_has_passed(
    pair: tuple[Brama, Brama], clock: Clock
) -> None:
    cached, other = pair
    assert cached.available("svc")
    other.failure("svc")
    other.failure("svc")
    assert not other.available("svc")
    clock.tick(WINDOW / 2)
    with statements(cached) as sent:
        assert cached.available("svc"), "within the window: the answer this process saw"
    assert sent == []
    clock.tick(WINDOW / 2)
    with statements(cached) as sent:
        assert not cached.available("svc")
    assert sent != []


def test_without_the_option_every_answer_reads_the_database(
    pair: tuple[Brama, Brama], clock: Clock
) -> None:
    _, other = pair
    assert other.available("svc")
    with statements(other) as sent:
        assert other.available("svc")
    assert sent != []


def test_never_across_a_transition_this_process_made(
    pair: tuple[Brama, Brama], clock: Clock
) -> None:
    cached, _ = pair
    assert cached.available("svc")
    cached.failure("svc")
    assert cached.failure("svc") is not None  # tripped it
    with statements(cached) as sent:
        assert not cached.available("svc")
    assert sent == [], "its own trip is in the cache"
    cached.close("svc")
    with statements(cached) as sent:
        assert cached.available("svc")
    assert sent == []


def test_a_cached_open_circuit_turns_half_open_on_time(
    make_brama: Callable[..., Brama], clock: Clock
) -> None:
    cached = make_brama(clock=clock, availability_cache=120, failure_threshold=1, expiry=60)
    cached.register("svc")
    cached.failure("svc")
    clock.tick(59.999)
    with statements(cached) as sent:
        assert not cached.available("svc")
        clock.tick(0.001)
        assert cached.available("svc")
    assert sent == []


def test_a_half_open_circuit_with_permits_asks_the_database(
    make_brama: Callable[..., Brama], clock: Clock
) -> None:
    cached = make_brama(
        clock=clock, availability_cache=120, failure_threshold=1, expiry=60, half_open_max_calls=1
    )
    other = make_brama(clock=clock)
    cached.register("svc")
    cached.failure("svc")
    clock.tick(60)
    with statements(cached) as sent:
        assert cached.available("svc")  # claims the one permit
    assert sent != []
    assert not other.available("svc"), "the permit is taken, in the database"
    with statements(cached) as sent:
        assert cached.available("svc"), "this caller holds it"
    assert sent != []


def test_reconfiguring_unregistering_and_failed_writes_drop_the_entry(
    pair: tuple[Brama, Brama], clock: Clock
) -> None:
    cached, other = pair
    assert cached.available("svc")
    cached.configure("svc", expiry=30)
    with statements(cached) as sent:
        cached.available("svc")
    assert sent != []
    with pytest.raises(NotRegisteredError):
        cached.failure("nowhere")
    with statements(cached) as sent:
        cached.available("svc")
    assert sent != [], "a write that failed leaves the database to answer"
    assert cached.unregister("svc")
    assert not cached.available("svc")
    other.register("svc")
    assert cached.available("svc"), "registered again elsewhere: read, not remembered as gone"


def test_bad_windows_are_refused(make_brama: Callable[..., Brama]) -> None:
    with pytest.raises(ArgumentTypeError):
        make_brama(availability_cache="1s")
    for nonsense in (0, -1, float("nan")):
        with pytest.raises(InvalidArgumentError):
            make_brama(availability_cache=nonsense)
    with pytest.raises(InvalidArgumentError, match="clock"):
        make_brama(availability_cache=1, clock="database")
