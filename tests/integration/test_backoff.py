"""``expiry_strategy="exponential"``: each re-opening from half-open multiplies the open
period by ``backoff_factor``, capped at ``max_expiry``; reaching closed resets it; ``status()``
shows ``current_expiry`` and ``next_probe_at``; on every dialect."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest
from freezegun import freeze_time
from freezegun.api import FrozenDateTimeFactory

from brama_sql import ArgumentTypeError, Brama, InvalidArgumentError, State
from brama_sql.replay import verify

T0 = datetime(2031, 5, 6, 7, 8, 9, tzinfo=timezone.utc)


@pytest.fixture
def clock() -> Iterator[FrozenDateTimeFactory]:
    with freeze_time(T0) as frozen:
        yield frozen


def test_five_failed_probes_grow_the_open_period_up_to_the_cap_and_closing_resets_it(
    brama: Brama, clock: FrozenDateTimeFactory
) -> None:
    brama.register(
        "svc", failure_threshold=1, expiry=10, expiry_strategy="exponential", max_expiry=100
    )
    brama.failure("svc")
    periods = []
    for _ in range(5):
        status = brama.status("svc")
        assert status.state is State.OPEN
        periods.append(status.current_expiry)
        assert status.next_probe_at == datetime.now(timezone.utc) + timedelta(
            seconds=status.current_expiry or 0
        )
        clock.tick(timedelta(seconds=(status.current_expiry or 0) - 0.001))
        assert not brama.available("svc"), "not a moment early"
        clock.tick(timedelta(seconds=0.001))
        assert brama.available("svc")
        assert brama.status("svc").current_expiry == status.current_expiry, "kept in half-open"
        brama.failure("svc", reason="probe failed")
    periods.append(brama.status("svc").current_expiry)
    assert periods == [10.0, 20.0, 40.0, 80.0, 100.0, 100.0]

    clock.tick(timedelta(seconds=100))
    brama.success("svc")
    status = brama.status("svc")
    assert status.state is State.CLOSED
    assert status.current_expiry is None and status.next_probe_at is None
    brama.failure("svc")
    assert brama.status("svc").current_expiry == 10.0, "the backoff starts over"
    verify(brama.engine, "svc")


def test_the_fixed_strategy_and_options_on_every_entry_point(
    brama: Brama, clock: FrozenDateTimeFactory
) -> None:
    brama.register("fixed", failure_threshold=1, expiry=10)
    brama.failure("fixed")
    clock.tick(timedelta(seconds=10))
    brama.failure("fixed")
    status = brama.status("fixed")
    assert (status.expiry_strategy, status.current_expiry) == ("fixed", 10.0)

    brama.register(
        "uncapped", failure_threshold=1, expiry=1, expiry_strategy="exponential", backoff_factor=3
    )
    brama.failure("uncapped")
    for _ in range(3):
        clock.tick(timedelta(seconds=brama.status("uncapped").current_expiry or 0))
        brama.failure("uncapped")
    assert brama.status("uncapped").current_expiry == 27.0
    assert brama.status("uncapped").max_expiry is None

    changed = brama.configure("fixed", expiry_strategy="exponential", max_expiry=15)
    assert (changed.expiry_strategy, changed.max_expiry) == ("exponential", 15.0)
    assert brama.configure("fixed", backoff_factor=2).backoff_factor == 2.0, "unchanged"
    assert [e.details for e in brama.events("fixed") if e.kind == "configured"] == [
        {
            "old": {"expiry_strategy": "fixed", "max_expiry": None},
            "new": {"expiry_strategy": "exponential", "max_expiry": 15.0},
        }
    ]
    clock.tick(timedelta(seconds=10))
    brama.failure("fixed")
    assert brama.status("fixed").current_expiry == 15.0
    with brama.guard("guarded", register=True, expiry=2, expiry_strategy="exponential"):
        pass
    assert brama.status("guarded").expiry_strategy == "exponential"
    for name in ("fixed", "uncapped", "guarded"):
        verify(brama.engine, name)


def test_bad_backoff_options_are_refused_and_nothing_is_written(brama: Brama) -> None:
    with pytest.raises(InvalidArgumentError, match="expiry_strategy"):
        brama.register("svc", expiry_strategy="linear")  # type: ignore[typeddict-item]
    with pytest.raises(InvalidArgumentError, match="backoff_factor"):
        brama.register("svc", backoff_factor=0.5)
    with pytest.raises(InvalidArgumentError, match="max_expiry"):
        brama.register("svc", expiry=60, max_expiry=30)
    with pytest.raises(ArgumentTypeError, match="backoff"):
        brama.register("svc", backoff="fast")  # type: ignore[call-arg]
    with pytest.raises(InvalidArgumentError, match="max_expiry"):
        Brama(brama.engine, expiry=60, max_expiry=10)
    assert brama.connections() == []
    brama.register("svc", expiry=10)
    with pytest.raises(InvalidArgumentError, match="max_expiry"):
        brama.configure("svc", max_expiry=5)
    assert [e.kind.value for e in brama.events("svc")] == ["registered"]
