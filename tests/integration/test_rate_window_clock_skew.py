"""Two processes whose clocks disagree: folding the tail of healthy successes never trips the
circuit silently; a report dated before the window's newest bucket counts but decides no rate,
and ``verify()`` explains the row."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone

from brama_sql import Brama, State
from brama_sql.replay import verify

T = datetime(2031, 5, 6, 7, 8, 10, tzinfo=timezone.utc)  # on a 1 s bucket of a 10 s window


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def test_folding_the_tail_never_trips_without_a_transition(
    make_brama: Callable[..., Brama],
) -> None:
    clock_a, clock_b = Clock(T), Clock(T + timedelta(seconds=12))  # host B runs 12 s ahead
    a, b = make_brama(clock=clock_a), make_brama(clock=clock_b)
    b.register("svc", failure_threshold=100, failure_rate_threshold=0.5, window=10, minimum_calls=3)
    for _ in range(10):
        b.success("svc")  # bucket T+12 (the first one exclusive, the others on the tail)
    for _ in range(20):
        a.success("svc")  # bucket T (tail)
    clock_a.now = T + timedelta(seconds=7)
    a.failure("svc")  # folds the tail; bucket T+7
    a.failure("svc")
    a.success("svc")  # resets failure_count: row window T:20, T+7:(3 calls, 2 failed), T+12:10
    clock_b.now = T + timedelta(seconds=14)
    b.success("svc")  # 2 failed of 14 at T+14: appended under the shared lock
    clock_a.now = T + timedelta(seconds=9)
    a.success("svc")  # 2 failed of 24 at T+9: appended under the shared lock
    a.failure("svc")  # exclusive: folds B's success, then A's
    opened = [e for e in a.events("svc") if e.to_state is State.OPEN]
    status = a.status("svc")
    assert status.state is not State.OPEN or opened, f"{status.state} with no transition logged"
    verify(a.engine, "svc")
