"""``disable()`` and ``force_open()``: the forced states, their transitions, what they admit,
how reports count in them, their release by ``close()``/``reset()``, the guard, the decorator,
the availability cache and batched reports honouring them; on every dialect."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone

import pytest
from freezegun import freeze_time
from freezegun.api import FrozenDateTimeFactory

from brama_sql import Brama, Cause, CircuitOpenError, Kind, NotRegisteredError, State
from brama_sql.replay import verify
from brama_sql.status_page import status_page_data, status_page_html

T0 = datetime(2031, 5, 6, 7, 8, 9, tzinfo=timezone.utc)


@pytest.fixture
def clock() -> Iterator[FrozenDateTimeFactory]:
    with freeze_time(T0) as frozen:
        yield frozen


def transitions(brama: Brama, identifier: str = "svc") -> list[tuple[str, str, str, str]]:
    return [
        (str(e.from_state), str(e.to_state), str(e.cause), str(e.reason))
        for e in brama.events(identifier)
        if e.kind is Kind.TRANSITION
    ]


def test_a_disabled_circuit_admits_counts_reports_and_never_trips(
    brama: Brama, clock: FrozenDateTimeFactory
) -> None:
    brama.register("svc", failure_threshold=2)
    brama.failure("svc")
    brama.disable("svc", reason="maintenance of the breaker")
    for _ in range(5):
        assert brama.available("svc")
        assert brama.failure("svc", reason="down") is None
    brama.success("svc")
    brama.failure("svc")
    status = brama.status("svc")
    assert status.state is State.DISABLED and status.available
    assert status.total_failures == 7 and status.total_successes == 1
    assert status.failure_count == 1, "the consecutive count still counts"
    with brama.guard("svc"):
        pass
    assert transitions(brama) == [
        ("unknown", "closed", "report", "first failure"),
        ("closed", "disabled", "disable", "maintenance of the breaker"),
    ]
    clock.tick(timedelta(hours=1))
    brama.close("svc")
    assert brama.status("svc").state is State.CLOSED
    assert brama.status("svc").failure_count == 0
    verify(brama.engine, "svc")


def test_a_forced_open_circuit_refuses_and_never_expires_until_released(
    brama: Brama, clock: FrozenDateTimeFactory
) -> None:
    brama.register("svc", expiry=10)
    brama.success("svc")
    brama.force_open("svc")
    clock.tick(timedelta(days=3))
    assert not brama.available("svc")
    status = brama.status("svc")
    assert status.state is State.FORCED_OPEN and not status.available
    assert status.next_probe_at is None and status.current_expiry is None
    assert status.opened_at == T0
    brama.failure("svc", reason="late")
    brama.success("svc")
    assert brama.status("svc").state is State.FORCED_OPEN
    with pytest.raises(CircuitOpenError) as refused, brama.guard("svc"):
        raise AssertionError("the block must not run")
    assert refused.value.retry_after is None
    assert refused.value.status is not None
    assert refused.value.status.state is State.FORCED_OPEN

    @brama.protect("svc", fallback=lambda: "cached")
    def call() -> str:
        return "live"

    assert call() == "cached"
    brama.reset("svc", reason="dependency back")
    assert brama.available("svc") and call() == "live"
    assert transitions(brama) == [
        ("unknown", "closed", "report", "first success"),
        ("closed", "forced_open", "force_open", "forced open"),
        ("forced_open", "closed", "manual_reset", "dependency back"),
    ]
    verify(brama.engine, "svc")


def test_forced_states_replace_each_other_and_open_close_move_them(
    brama: Brama, clock: FrozenDateTimeFactory
) -> None:
    brama.register("svc", expiry=5, half_open_max_calls=1)
    brama.open("svc")
    clock.tick(timedelta(seconds=6))
    assert brama.acquire("svc") is not None  # half-open: a probe permit claimed
    brama.force_open("svc")
    brama.disable("svc")
    brama.force_open("svc")
    brama.open("svc")
    clock.tick(timedelta(seconds=5))
    assert brama.status("svc").state is State.HALF_OPEN, "a manual open expires as usual"
    brama.disable("svc")
    brama.close("svc")
    assert [t[:3] for t in transitions(brama)] == [
        ("unknown", "open", "manual_open"),
        ("open", "half_open", "expiry"),
        ("half_open", "forced_open", "force_open"),
        ("forced_open", "disabled", "disable"),
        ("disabled", "forced_open", "force_open"),
        ("forced_open", "open", "manual_open"),
        ("open", "half_open", "expiry"),
        ("half_open", "disabled", "disable"),
        ("disabled", "closed", "manual_close"),
    ]
    verify(brama.engine, "svc")


def test_forced_states_need_a_registered_connection_and_notify_listeners(
    brama: Brama,
) -> None:
    with pytest.raises(NotRegisteredError):
        brama.disable("ghost")
    with pytest.raises(NotRegisteredError):
        brama.force_open("ghost")
    seen: list[Cause | None] = []
    brama.on_state_change(lambda event: seen.append(event.cause))
    brama.register("svc")
    brama.disable("svc")
    brama.force_open("svc")
    assert seen == [Cause.DISABLE, Cause.FORCE_OPEN]


def test_the_availability_cache_and_batched_reports_honour_forced_states(
    make_brama: Callable[..., Brama], clock: FrozenDateTimeFactory
) -> None:
    cached = make_brama(availability_cache=60, batch_reports=60)
    other = make_brama()
    cached.register("svc", failure_threshold=1)
    cached.success("svc")
    cached.force_open("svc")
    assert not cached.available("svc"), "its own transition is never stale"
    cached.close("svc")
    assert cached.available("svc")
    cached.disable("svc")
    for _ in range(3):
        cached.success("svc")
        cached.failure("svc")
    cached.flush()
    other.force_open("svc")
    clock.tick(timedelta(seconds=61))
    assert not cached.available("svc")
    status = other.status("svc")
    assert status.state is State.FORCED_OPEN
    assert (status.total_successes, status.total_failures) == (4, 3)
    verify(other.engine, "svc")


def test_the_status_page_and_the_report_show_forced_states(
    brama: Brama, clock: FrozenDateTimeFactory
) -> None:
    brama.register("held")
    brama.register("quiet")
    brama.force_open("held")
    brama.disable("quiet")
    clock.tick(timedelta(minutes=10))
    page = status_page_html(brama)
    assert "forced-open: 1" in page and "disabled: 1" in page
    assert 'class="seg-forced_open"' in page and 'class="seg-disabled"' in page
    assert status_page_data(brama)["states"]["forced_open"] == 1
    (held,) = [item for item in brama.report(T0).connections if item.identifier == "held"]
    assert (held.trips, held.time_open) == (1, 600.0), "forced open counts as open"
