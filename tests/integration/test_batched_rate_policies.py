"""Batched reporting never keeps back a success of a connection with a rate policy: such a
success may bring the window to ``minimum_calls`` or be slow, and trip the circuit at once."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timezone

import pytest
from freezegun import freeze_time
from freezegun.api import FrozenDateTimeFactory

from brama_sql import Brama, State

T0 = datetime(2031, 5, 6, 7, 8, 10, tzinfo=timezone.utc)


@pytest.fixture
def clock() -> Iterator[FrozenDateTimeFactory]:
    with freeze_time(T0) as frozen:
        yield frozen


@pytest.mark.parametrize("batch", [None, 3600])
def test_a_batched_success_that_reaches_the_failure_rate_trips_at_once(
    make_brama: Callable[..., Brama], clock: FrozenDateTimeFactory, batch: int | None
) -> None:
    brama = make_brama(batch_reports=batch)
    brama.register("svc", failure_threshold=100, failure_rate_threshold=0.5, minimum_calls=4)
    brama.failure("svc")
    brama.failure("svc")
    brama.success("svc")  # 3 calls, 2 failed; failure_count back to 0 ("healthy")
    transition = brama.success("svc")  # 4 calls, 2 failed: 50 % -> open
    assert transition is not None and transition.to_state is State.OPEN
    assert not brama.available("svc")


@pytest.mark.parametrize("batch", [None, 3600])
def test_a_batched_slow_success_trips_the_slow_call_rate_at_once(
    make_brama: Callable[..., Brama], clock: FrozenDateTimeFactory, batch: int | None
) -> None:
    brama = make_brama(batch_reports=batch)
    brama.register(
        "svc",
        slow_call_duration=1.0,
        slow_call_rate_threshold=0.5,
        minimum_calls=2,
    )
    brama.success("svc")  # unknown -> closed, written at once
    transition = brama.success("svc", duration=5.0)  # 1 slow of 2: 50 % -> open
    assert transition is not None and transition.to_state is State.OPEN
    assert not brama.available("svc")
