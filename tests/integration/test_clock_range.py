"""A clock outside the times brama_sql accepts (1970 to 9000) is refused before anything is
written, so no row is left whose later reads overflow; near the end of the range, ten-year
expiries and permits still fit and every read works, on every dialect."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from brama_sql import Brama, BramaError, InvalidArgumentError, State
from brama_sql.validation import MAX_SECONDS

RowCounts = Callable[[Brama], tuple[int, int]]
TEN_YEARS = timedelta(seconds=MAX_SECONDS)

OUT_OF_RANGE = {
    "year-9999": datetime(9999, 12, 31, 23, 59, tzinfo=timezone.utc),
    "year-9000": datetime(9000, 1, 1, tzinfo=timezone.utc),
    "before-1970": datetime(1969, 12, 31, 23, 59, tzinfo=timezone.utc),
    "beyond-9999-in-utc": datetime(9999, 12, 31, 23, 0, tzinfo=timezone(timedelta(hours=-5))),
}


class Clock:
    """A clock the test sets by hand."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.mark.parametrize("moment", OUT_OF_RANGE.values(), ids=OUT_OF_RANGE.keys())
def test_a_clock_out_of_range_is_refused_and_writes_nothing(
    make_brama: Callable[..., Brama], row_counts: RowCounts, moment: datetime
) -> None:
    good = make_brama(failure_threshold=1)
    good.register("db")
    bad = make_brama(clock=lambda: moment, failure_threshold=1)
    counts = row_counts(good)
    calls: list[Callable[[], Any]] = [
        lambda: bad.register("new"),
        lambda: bad.failure("db", reason="boom"),
        lambda: bad.open("db"),
        lambda: bad.status("db"),
        lambda: bad.available("db"),
        bad.cleanup,
    ]
    for call in calls:
        with pytest.raises(InvalidArgumentError, match="the clock returned") as caught:
            call()
        assert isinstance(caught.value, BramaError) and caught.value.argument == "clock"
    assert row_counts(good) == counts, "nothing was written"
    status = good.status("db")  # and every later read works
    assert status.state is State.UNKNOWN
    assert [event.kind.value for event in good.events("db")] == ["registered"]


def test_near_the_end_of_the_range_every_row_stays_readable(
    make_brama: Callable[..., Brama],
) -> None:
    clock = Clock(datetime(8989, 12, 31, 23, 0, tzinfo=timezone.utc))
    brama = make_brama(
        clock=clock,
        failure_threshold=1,
        expiry=TEN_YEARS,
        half_open_max_calls=1,
        probe_timeout=TEN_YEARS,
        inactive_after=TEN_YEARS,
    )
    brama.register("db")
    brama.failure("db", reason="late")
    assert brama.status("db").state is State.OPEN
    clock.now += TEN_YEARS  # the end of 8999: the expiry is due
    assert brama.available("db") is True  # claims a permit that expires ten years later
    assert brama.status("db").state is State.HALF_OPEN
    assert brama.cleanup() == 0
    assert [status.identifier for status in brama.connections()] == ["db"]
    brama.success("db")
    assert brama.status("db").state is State.CLOSED
    assert brama.events("db", since=datetime(9999, 12, 31, tzinfo=timezone.utc)) == []
    assert len(brama.events("db")) >= 5
