"""An exponential backoff without ``max_expiry`` stops at ten years: the open period never grows
past what a date can hold, so the connection stays usable (and ``close()`` releases it)."""

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


def test_an_uncapped_backoff_never_makes_the_circuit_unusable(
    brama: Brama, clock: FrozenDateTimeFactory
) -> None:
    brama.register(
        "svc", failure_threshold=1, expiry=1, expiry_strategy="exponential", backoff_factor=1e6
    )
    brama.failure("svc")  # open for 1 s
    clock.tick(timedelta(seconds=1))
    brama.failure("svc")  # probe failed: open for 1e6 s (11.6 days)
    clock.tick(timedelta(seconds=brama.status("svc").current_expiry))
    brama.failure("svc")  # probe failed: open for 1e12 s (31,700 years)
    status = brama.status("svc")  # raises OverflowError: date value out of range
    assert status.state is State.OPEN
    brama.close("svc")
    assert brama.available("svc")
    verify(brama.engine, "svc")
