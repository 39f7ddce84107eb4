"""``Brama(clock="database")``: every timestamp comes from the database server, inside the
deciding transaction, so hosts whose own clocks disagree still agree on the circuit."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

from freezegun import freeze_time

from brama_sql import Brama, Kind, State
from brama_sql.replay import verify

SKEW = timedelta(hours=2)


def test_timestamps_ignore_the_python_clock(make_brama: Callable[..., Brama]) -> None:
    brama = make_brama(clock="database")
    with freeze_time("1999-12-31 23:59:59"):
        status = brama.register("svc")
        brama.failure("svc")
    real_now = datetime.now(timezone.utc)
    assert abs(status.registered_at - real_now) < timedelta(minutes=1)
    (failure,) = [e for e in brama.events("svc") if e.kind is Kind.FAILURE]
    assert abs(failure.occurred_at - real_now) < timedelta(minutes=1)
    assert failure.occurred_at.tzinfo is timezone.utc


def test_hosts_with_skewed_clocks_agree_on_the_expiry(make_brama: Callable[..., Brama]) -> None:
    ahead, behind = make_brama(clock="database"), make_brama(clock="database")
    real_now = datetime.now(timezone.utc)
    with freeze_time(real_now + SKEW):
        ahead.register("svc", failure_threshold=1, expiry=3600)
        ahead.failure("svc")
        assert ahead.status("svc").state is State.OPEN
    with freeze_time(real_now - SKEW):
        status = behind.status("svc")
    assert status.state is State.OPEN
    assert status.opened_at is not None
    assert abs(status.opened_at - real_now) < timedelta(minutes=1)
    # A host on its own (skewed) Python clock would already let probes through:
    with freeze_time(real_now + timedelta(hours=1, minutes=1)):
        assert make_brama().status("svc").state is State.HALF_OPEN
        assert make_brama(clock="database").status("svc").state is State.OPEN


def test_timestamps_follow_the_commit_order(make_brama: Callable[..., Brama]) -> None:
    brama = make_brama(clock="database")
    brama.register("svc", failure_threshold=1_000_000)

    def report() -> None:
        for _ in range(25):
            brama.failure("svc")

    threads = [threading.Thread(target=report) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    times = [e.occurred_at for e in brama.events("svc")]
    assert len(times) == 1 + 100 + 1  # registered, the failures, unknown -> closed
    assert times == sorted(times), "the time is read after the row lock is taken"
    verify(brama.engine, "svc")
