"""Bad arguments raise at once a BramaError that is a ValueError or TypeError, name the argument,
and write nothing to either table."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy.engine import URL

from brama_sql import Brama, BramaError

RowCounts = Callable[[Brama], tuple[int, int]]
RowReader = Callable[..., "dict[str, Any] | None"]
Call = Callable[[Brama, Any], Any]
LogCheck = Callable[..., Any]

IDENTIFIER_CALLS: dict[str, Call] = {
    "register": lambda brama, value: brama.register(value),
    "success": lambda brama, value: brama.success(value),
    "failure": lambda brama, value: brama.failure(value),
    "status": lambda brama, value: brama.status(value),
    "available": lambda brama, value: brama.available(value),
    "unregister": lambda brama, value: brama.unregister(value),
    "open": lambda brama, value: brama.open(value),
    "close": lambda brama, value: brama.close(value),
    "reset": lambda brama, value: brama.reset(value),
    "events": lambda brama, value: brama.events(value),
}
"""Every call that takes an identifier, with the identifier replaced by ``value``."""

SCOPE_CALLS: dict[str, Call] = {
    "register": lambda brama, value: brama.register("db", scope=value),
    "success": lambda brama, value: brama.success("db", scope=value),
    "failure": lambda brama, value: brama.failure("db", scope=value),
    "status": lambda brama, value: brama.status("db", scope=value),
    "available": lambda brama, value: brama.available("db", scope=value),
    "unregister": lambda brama, value: brama.unregister("db", scope=value),
    "open": lambda brama, value: brama.open("db", scope=value),
    "close": lambda brama, value: brama.close("db", scope=value),
    "reset": lambda brama, value: brama.reset("db", scope=value),
    "events": lambda brama, value: brama.events("db", scope=value),
    "connections": lambda brama, value: brama.connections(scope=value),
}
"""Every call that takes a scope, with the scope replaced by ``value``."""

BAD_NAMES: dict[str, Any] = {
    "empty": "",
    "int": 123,
    "bytes": b"db",
    "list": ["db"],
    "256-chars": "x" * 256,
    "256-multibyte-chars": "é" * 256,
    "nul": "d\x00b",
    "lone-surrogate": "db\ud800",
}
"""Values that are not a non-empty str of at most 255 characters a database can store."""


def _circular() -> dict[str, Any]:
    looped: dict[str, Any] = {}
    looped["self"] = looped
    return looped


BAD_METADATA: dict[str, Any] = {
    "list": [1, 2],
    "str": '{"a": 1}',
    "int": 5,
    "object-value": {"a": object()},
    "set-value": {"a": {1, 2}},
    "bytes-value": {"a": b"x"},
    "datetime-value": {"at": datetime(2024, 1, 1)},
    "nan": {"a": math.nan},
    "circular": _circular(),
}
"""Values that are not a dict JSON can encode."""

BAD_THRESHOLDS: dict[str, Any] = {
    "zero": 0,
    "negative": -3,
    "float": 2.0,
    "str": "5",
    "bool": True,
}

BAD_DURATIONS: dict[str, Any] = {
    "zero": 0,
    "zero-float": 0.0,
    "negative": -1.5,
    "nan": math.nan,
    "str": "60",
    "zero-timedelta": timedelta(0),
    "negative-timedelta": timedelta(seconds=-5),
    "list": [60],
}
"""Values that are not a positive number of seconds or a positive timedelta."""


@pytest.fixture
def populated(brama: Brama) -> Iterator[Brama]:
    """A Brama whose tables already hold a connection with a few events."""
    brama.register("db", scope="s", metadata={"v": 1}, failure_threshold=3)
    brama.failure("db", scope="s")
    brama.success("db", scope="s")
    yield brama


def _assert_refused(
    brama: Brama,
    call: Callable[[], Any],
    argument: str,
    row_counts: RowCounts,
    connection_row: RowReader,
    label: str = "",
) -> BramaError:
    """Run ``call``; assert it raises a BramaError about ``argument`` and changes no row."""
    counts = row_counts(brama)
    row = connection_row(brama, "db", "s")
    with pytest.raises(BramaError) as caught:
        call()
    error = caught.value
    assert isinstance(error, (ValueError, TypeError)), (label, type(error))
    assert argument in str(error), (label, str(error))
    assert row_counts(brama) == counts, label
    assert connection_row(brama, "db", "s") == row, label
    return error


NAMED_CALLS = [("identifier", call) for call in sorted(IDENTIFIER_CALLS)] + [
    ("scope", call) for call in sorted(SCOPE_CALLS)
]


@pytest.mark.parametrize(("argument", "call"), NAMED_CALLS)
def test_bad_identifier_or_scope(
    populated: Brama,
    argument: str,
    call: str,
    row_counts: RowCounts,
    connection_row: RowReader,
    assert_log_explains_row: LogCheck,
) -> None:
    calls = IDENTIFIER_CALLS if argument == "identifier" else SCOPE_CALLS
    for label, value in BAD_NAMES.items():
        _assert_refused(
            populated,
            lambda value=value: calls[call](populated, value),
            argument,
            row_counts,
            connection_row,
            label,
        )
    assert_log_explains_row(populated, "db", "s")


def test_none_identifier(
    populated: Brama, row_counts: RowCounts, connection_row: RowReader
) -> None:
    for call in sorted(set(IDENTIFIER_CALLS) - {"events"}):  # events(None) means every one
        error = _assert_refused(
            populated,
            lambda call=call: IDENTIFIER_CALLS[call](populated, None),
            "identifier",
            row_counts,
            connection_row,
        )
        assert isinstance(error, TypeError)


@pytest.mark.parametrize("value", BAD_METADATA.values(), ids=BAD_METADATA.keys())
def test_bad_metadata(
    populated: Brama, value: Any, row_counts: RowCounts, connection_row: RowReader
) -> None:
    _assert_refused(
        populated,
        lambda: populated.register("new", metadata=value),
        "metadata",
        row_counts,
        connection_row,
    )
    assert populated.available("new") is False


@pytest.mark.parametrize("value", BAD_THRESHOLDS.values(), ids=BAD_THRESHOLDS.keys())
def test_bad_failure_threshold(
    populated: Brama,
    value: Any,
    row_counts: RowCounts,
    connection_row: RowReader,
    db_url: URL,
) -> None:
    _assert_refused(
        populated,
        lambda: populated.register("new", failure_threshold=value),
        "failure_threshold",
        row_counts,
        connection_row,
    )
    _assert_refused(
        populated,
        lambda: Brama(db_url, failure_threshold=value),
        "failure_threshold",
        row_counts,
        connection_row,
    )


@pytest.mark.parametrize("value", BAD_DURATIONS.values(), ids=BAD_DURATIONS.keys())
def test_bad_expiry(
    populated: Brama,
    value: Any,
    row_counts: RowCounts,
    connection_row: RowReader,
    db_url: URL,
) -> None:
    _assert_refused(
        populated,
        lambda: populated.register("new", expiry=value),
        "expiry",
        row_counts,
        connection_row,
    )
    _assert_refused(
        populated, lambda: Brama(db_url, expiry=value), "expiry", row_counts, connection_row
    )


@pytest.mark.parametrize("value", BAD_DURATIONS.values(), ids=BAD_DURATIONS.keys())
def test_bad_inactive_after(
    populated: Brama,
    value: Any,
    row_counts: RowCounts,
    connection_row: RowReader,
    db_url: URL,
) -> None:
    _assert_refused(
        populated,
        lambda: Brama(db_url, inactive_after=value),
        "inactive_after",
        row_counts,
        connection_row,
    )


@pytest.mark.parametrize("option", ["failure_threshold", "expiry"])
def test_constructor_options_must_not_be_none(
    populated: Brama,
    option: str,
    row_counts: RowCounts,
    connection_row: RowReader,
    db_url: URL,
) -> None:
    _assert_refused(
        populated, lambda: Brama(db_url, **{option: None}), option, row_counts, connection_row
    )


def test_bad_clock_and_url(
    populated: Brama, row_counts: RowCounts, connection_row: RowReader, db_url: URL
) -> None:
    _assert_refused(
        populated, lambda: Brama(db_url, clock="now"), "clock", row_counts, connection_row
    )
    _assert_refused(populated, lambda: Brama(42), "url", row_counts, connection_row)


def test_a_clock_returning_naive_time_writes_nothing(
    make_brama: Callable[..., Brama], row_counts: RowCounts, connection_row: RowReader
) -> None:
    naive = make_brama(clock=lambda: datetime(2024, 1, 1, 12, 0))
    counts = row_counts(naive)
    with pytest.raises(BramaError) as caught:
        naive.register("db")
    assert isinstance(caught.value, ValueError)
    assert "clock" in str(caught.value)
    assert row_counts(naive) == counts
    assert connection_row(naive, "db", None) is None


def test_a_change_that_fails_midway_writes_nothing(
    make_brama: Callable[..., Brama],
    row_counts: RowCounts,
    connection_row: RowReader,
    assert_log_explains_row: LogCheck,
) -> None:
    """One transaction per call: a clock that turns bad after the row is locked rolls it back."""
    times: list[datetime] = [datetime(2024, 1, 1, 12, 0, tzinfo=timezone.utc)]
    brama = make_brama(clock=lambda: times[0], failure_threshold=1)
    brama.register("db")
    counts = row_counts(brama)
    row = connection_row(brama, "db", None)
    times[0] = datetime(2024, 1, 1, 12, 1)  # naive
    for call in (brama.failure, brama.success, brama.open, brama.close, brama.reset):
        with pytest.raises(BramaError, match="clock"):
            call("db")
        assert row_counts(brama) == counts
        assert connection_row(brama, "db", None) == row
    times[0] = datetime(2024, 1, 1, 12, 2, tzinfo=timezone.utc)
    brama.failure("db")
    assert_log_explains_row(brama, "db")


BAD_REASONS: dict[str, Any] = {
    "int": 5,
    "bytes": b"timeout",
    "too-long": "x" * 1025,
    "nul": "time\x00out",
}
REASON_CALLS: dict[str, Callable[[Brama, Any], Any]] = {
    "success": lambda brama, value: brama.success("db", scope="s", reason=value),
    "failure": lambda brama, value: brama.failure("db", scope="s", reason=value),
    "open": lambda brama, value: brama.open("db", scope="s", reason=value),
    "close": lambda brama, value: brama.close("db", scope="s", reason=value),
    "reset": lambda brama, value: brama.reset("db", scope="s", reason=value),
}


@pytest.mark.parametrize("call", sorted(REASON_CALLS))
def test_bad_reason(
    populated: Brama,
    call: str,
    row_counts: RowCounts,
    connection_row: RowReader,
    assert_log_explains_row: LogCheck,
) -> None:
    for label, value in BAD_REASONS.items():
        _assert_refused(
            populated,
            lambda value=value: REASON_CALLS[call](populated, value),
            "reason",
            row_counts,
            connection_row,
            label,
        )
    assert_log_explains_row(populated, "db", "s")


@pytest.mark.parametrize(
    ("argument", "call"),
    [
        ("since", lambda brama: brama.events(since="2024-01-01")),
        ("since", lambda brama: brama.events(since=datetime(2024, 1, 1))),  # naive
        ("limit", lambda brama: brama.events(limit=-1)),
        ("limit", lambda brama: brama.events(limit=2.5)),
        ("limit", lambda brama: brama.events(limit="10")),
        ("exist_ok", lambda brama: brama.register("new", exist_ok="yes")),
    ],
    ids=["since-str", "since-naive", "limit-negative", "limit-float", "limit-str", "exist_ok"],
)
def test_other_bad_arguments(
    populated: Brama,
    argument: str,
    call: Callable[[Brama], Any],
    row_counts: RowCounts,
    connection_row: RowReader,
) -> None:
    _assert_refused(populated, lambda: call(populated), argument, row_counts, connection_row)


def test_limits_are_inclusive(populated: Brama) -> None:
    """The largest accepted values work on every dialect (the boundary of the checks above)."""
    longest = "é" * 255
    status = populated.register(longest, scope=longest, failure_threshold=1, expiry=0.001)
    assert (status.identifier, status.scope) == (longest, longest)
    populated.failure(longest, scope=longest, reason="x" * 1024)
    assert populated.events(longest, scope=longest)[1].reason == "x" * 1024
