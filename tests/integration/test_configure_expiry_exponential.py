"""``configure(expiry=...)`` on an open circuit counts from ``opened_at`` under both strategies
while the circuit is in its first open period (the plain expiry; only backed-off periods keep
their own length)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest
from freezegun import freeze_time
from freezegun.api import FrozenDateTimeFactory

from brama_sql import Brama, State
from brama_sql.replay import verify

T0 = datetime(2031, 5, 6, 7, 8, 10, tzinfo=timezone.utc)


@pytest.fixture
def clock() -> Iterator[FrozenDateTimeFactory]:
    with freeze_time(T0) as frozen:
        yield frozen


@pytest.mark.parametrize("strategy", ["fixed", "exponential"])
def test_a_lowered_expiry_counts_from_opened_at_whatever_the_strategy(
    brama: Brama, clock: FrozenDateTimeFactory, strategy: str
) -> None:
    brama.register("svc", failure_threshold=1, expiry=60, expiry_strategy=strategy)
    brama.failure("svc")  # open, first period: expiry = 60 s
    clock.tick(timedelta(seconds=10))
    status = brama.configure("svc", expiry=5)
    assert status.state is State.HALF_OPEN, "opened_at + 5 s has passed"
    assert brama.available("svc")
    verify(brama.engine, "svc")
