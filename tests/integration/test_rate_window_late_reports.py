"""One clock, no skew: a batched success written after another process's newer reports is
counted but, dated before the window's newest bucket, decides no rate (the window has moved on
from its instant), so it trips nothing the share at its time did not."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone

from brama_sql import Brama, State
from brama_sql.replay import verify

T = datetime(2031, 5, 6, 7, 8, 10, tzinfo=timezone.utc)  # on a 1 s bucket of a 10 s window


class Clock:
    def __init__(self) -> None:
        self.now = T

    def __call__(self) -> datetime:
        return self.now

    def at(self, seconds: float) -> None:
        self.now = T + timedelta(seconds=seconds)


def test_a_late_batched_success_never_trips_on_a_window_it_never_had(
    make_brama: Callable[..., Brama],
) -> None:
    clock = Clock()
    q = make_brama(clock=clock)
    p = make_brama(clock=clock, batch_reports=3600)
    q.register("svc", failure_threshold=100, failure_rate_threshold=0.5, window=10, minimum_calls=3)
    for _ in range(20):
        q.success("svc")  # bucket T: 20 calls
    clock.at(5)
    q.failure("svc")
    q.failure("svc")
    q.success("svc")  # bucket T+5: 3 calls, 2 failed; 2 of 23 in the window
    clock.at(6)
    assert p.available("svc")  # p sees the circuit closed and healthy
    assert p.success("svc") is None  # kept back, at T+6: 2 failed of 24
    clock.at(7)
    for _ in range(5):
        q.success("svc")  # bucket T+7
    clock.at(12)
    q.failure("svc")  # drops bucket T (out of the window at T+12)
    q.success("svc")  # 3 failed of 10
    clock.at(13)
    p.flush()  # writes p's success of T+6
    status = q.status("svc")
    reasons = [e.reason for e in q.events("svc") if e.to_state is State.OPEN]
    verify(q.engine, "svc")
    assert status.state is State.CLOSED, reasons
