"""Argument checks of brama_sql.validation and brama_sql.clock.read: what is accepted, and that
everything else raises a BramaError that is a ValueError or TypeError naming the argument."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date, datetime, timedelta, timezone, tzinfo
from typing import Any

import pytest

from brama_sql import validation
from brama_sql.clock import read
from brama_sql.errors import ArgumentTypeError, BramaError, InvalidArgumentError

AWARE = datetime(2024, 3, 1, 12, 0, tzinfo=timezone.utc)


def _refuses(
    check: Callable[[], object], error: type[BramaError], name: str
) -> pytest.ExceptionInfo[BramaError]:
    """Assert that ``check()`` raises ``error``, a BramaError and the builtin it stands for,
    with a message that starts with the argument's ``name``."""
    with pytest.raises(error, match=rf"^{name}\b") as caught:
        check()
    assert isinstance(caught.value, BramaError)
    builtin = ValueError if error is InvalidArgumentError else TypeError
    assert isinstance(caught.value, builtin)
    return caught


def test_error_classes_are_brama_errors_and_builtin_errors() -> None:
    """Callers may catch the builtin ValueError/TypeError or BramaError."""
    assert issubclass(InvalidArgumentError, ValueError)
    assert issubclass(InvalidArgumentError, BramaError)
    assert issubclass(ArgumentTypeError, TypeError)
    assert issubclass(ArgumentTypeError, BramaError)


# -- identifier and scope --------------------------------------------------------------------

VALID_IDENTIFIERS = [
    "payments-api",
    "x",
    "a" * 255,
    "é" * 255,
    "DB",
    "db ",
    " db",
    "数据库",
    "🚀 rocket",
    "'; DROP TABLE x;--",
    'quote " and back\\slash %s %% _ *',
    "line\nbreak",
]


@pytest.mark.parametrize("value", VALID_IDENTIFIERS)
def test_identifier_accepts_any_storable_text_up_to_255_characters(value: str) -> None:
    """Unicode, spaces at the ends and SQL metacharacters are fine; the value is kept as is."""
    assert validation.identifier(value) == value
    assert validation.scope(value) == value


def test_scope_none_means_the_unscoped_connection() -> None:
    """scope=None is accepted and stays None."""
    assert validation.scope(None) is None


INVALID_IDENTIFIERS = [
    pytest.param(42, ArgumentTypeError, id="int"),
    pytest.param(b"db", ArgumentTypeError, id="bytes"),
    pytest.param(["db"], ArgumentTypeError, id="list"),
    pytest.param("", InvalidArgumentError, id="empty"),
    pytest.param(" ", InvalidArgumentError, id="space"),
    pytest.param(" \t\n", InvalidArgumentError, id="whitespace"),
    pytest.param("\u3000", InvalidArgumentError, id="ideographic-space"),
    pytest.param("a" * 256, InvalidArgumentError, id="256-characters"),
    pytest.param("é" * 256, InvalidArgumentError, id="256-non-ascii-characters"),
    pytest.param("db\x00", InvalidArgumentError, id="NUL"),
    pytest.param("\x00", InvalidArgumentError, id="only-NUL"),
    pytest.param("db\ud800", InvalidArgumentError, id="lone-surrogate"),
]


@pytest.mark.parametrize(
    ("value", "error"),
    [pytest.param(None, ArgumentTypeError, id="None"), *INVALID_IDENTIFIERS],
)
def test_identifier_refuses(value: object, error: type[BramaError]) -> None:
    """Non-str, empty, blank, too long, NUL or lone surrogate: refused, naming the argument."""
    _refuses(lambda: validation.identifier(value), error, "identifier")


@pytest.mark.parametrize(("value", "error"), INVALID_IDENTIFIERS)
def test_scope_refuses_what_identifier_refuses_and_names_scope(
    value: object, error: type[BramaError]
) -> None:
    """A scope is checked like an identifier (None, the unscoped connection, aside)."""
    _refuses(lambda: validation.scope(value), error, "scope")


def test_identifier_length_message_states_the_limit_and_the_length() -> None:
    """The message of a too-long identifier says how long it may be and how long it is."""
    caught = _refuses(lambda: validation.identifier("a" * 300), InvalidArgumentError, "identifier")
    assert "255" in str(caught.value)
    assert "300" in str(caught.value)


# -- reason ----------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [None, "", "timeout after 5 s", "x" * 1024, "'; --"])
def test_reason_accepts_none_and_text_up_to_1024_characters(value: str | None) -> None:
    """A reason is optional free text."""
    assert validation.reason(value) == value


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (5, ArgumentTypeError),
        (b"timeout", ArgumentTypeError),
        ("x" * 1025, InvalidArgumentError),
        ("time\x00out", InvalidArgumentError),
        ("\udfff", InvalidArgumentError),
    ],
)
def test_reason_refuses(value: object, error: type[BramaError]) -> None:
    """Non-str, too long, NUL or lone surrogate: refused, naming reason."""
    _refuses(lambda: validation.reason(value), error, "reason")


# -- failure_threshold -----------------------------------------------------------------------


@pytest.mark.parametrize("value", [1, 2, 5, 1000, 2**31 - 1])
def test_threshold_accepts_positive_ints(value: int) -> None:
    """Any whole number from 1 up to the largest 32-bit int."""
    assert validation.threshold(value) == value


@pytest.mark.parametrize(
    ("value", "error"),
    [
        pytest.param(True, ArgumentTypeError, id="True"),
        pytest.param(False, ArgumentTypeError, id="False"),
        pytest.param(0, InvalidArgumentError, id="zero"),
        pytest.param(-1, InvalidArgumentError, id="negative"),
        pytest.param(2**31, InvalidArgumentError, id="beyond-32-bit"),
        pytest.param(10**400, InvalidArgumentError, id="huge"),
        pytest.param(5.0, ArgumentTypeError, id="float"),
        pytest.param("5", ArgumentTypeError, id="str"),
        pytest.param(None, ArgumentTypeError, id="None"),
    ],
)
def test_threshold_refuses(value: object, error: type[BramaError]) -> None:
    """bool, zero, negative, too large and non-int thresholds are refused."""
    _refuses(lambda: validation.threshold(value), error, "failure_threshold")


def test_threshold_uses_the_name_it_is_given() -> None:
    """The message names the argument the caller passed the value as."""
    _refuses(
        lambda: validation.threshold(0, "half_open_max_calls"),
        InvalidArgumentError,
        "half_open_max_calls",
    )


# -- durations -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (60, 60.0),
        (60.0, 60.0),
        (0.001, 0.001),
        (1e-6, 1e-6),
        (timedelta(seconds=90), 90.0),
        (timedelta(milliseconds=1500), 1.5),
        (timedelta(days=1), 86_400.0),
        (validation.MAX_SECONDS, validation.MAX_SECONDS),
    ],
)
def test_seconds_accepts_positive_numbers_and_timedeltas(value: object, expected: float) -> None:
    """Seconds as int, float or timedelta, returned as float seconds."""
    result = validation.seconds(value, "expiry")
    assert result == expected
    assert type(result) is float


@pytest.mark.parametrize(
    ("value", "error"),
    [
        pytest.param(float("nan"), InvalidArgumentError, id="nan"),
        pytest.param(float("inf"), InvalidArgumentError, id="inf"),
        pytest.param(float("-inf"), InvalidArgumentError, id="-inf"),
        pytest.param(0, InvalidArgumentError, id="zero"),
        pytest.param(0.0, InvalidArgumentError, id="zero-float"),
        pytest.param(-0.0, InvalidArgumentError, id="negative-zero"),
        pytest.param(-1, InvalidArgumentError, id="negative"),
        pytest.param(-0.5, InvalidArgumentError, id="negative-float"),
        pytest.param(validation.MAX_SECONDS * 2, InvalidArgumentError, id="beyond-ten-years"),
        pytest.param(timedelta(0), InvalidArgumentError, id="timedelta-zero"),
        pytest.param(timedelta(seconds=-5), InvalidArgumentError, id="timedelta-negative"),
        pytest.param(timedelta.max, InvalidArgumentError, id="timedelta-max"),
        pytest.param(True, ArgumentTypeError, id="True"),
        pytest.param(False, ArgumentTypeError, id="False"),
        pytest.param("60", ArgumentTypeError, id="str"),
        pytest.param(None, ArgumentTypeError, id="None"),
        pytest.param([60], ArgumentTypeError, id="list"),
    ],
)
@pytest.mark.parametrize("name", ["expiry", "inactive_after"])
def test_seconds_refuses(value: object, error: type[BramaError], name: str) -> None:
    """Not finite, not positive, too long, bool or non-number durations are refused by name."""
    _refuses(lambda: validation.seconds(value, name), error, name)


def test_seconds_refuses_an_int_too_large_for_a_float() -> None:
    """An int beyond float range is an invalid duration, not a crash."""
    _refuses(lambda: validation.seconds(10**400, "expiry"), InvalidArgumentError, "expiry")


def test_optional_seconds_accepts_none_and_checks_anything_else() -> None:
    """inactive_after=None disables removal; other values follow seconds()."""
    assert validation.optional_seconds(None, "inactive_after") is None
    assert validation.optional_seconds(timedelta(hours=1), "inactive_after") == 3600.0
    _refuses(
        lambda: validation.optional_seconds(0, "inactive_after"),
        InvalidArgumentError,
        "inactive_after",
    )


# -- metadata --------------------------------------------------------------------------------

_EMPTY_ENCODED = len(json.dumps({"k": ""}, ensure_ascii=False).encode("utf-8"))
LARGEST_METADATA = {"k": "x" * (validation.METADATA_BYTES - _EMPTY_ENCODED)}


@pytest.mark.parametrize(
    "value",
    [
        pytest.param({}, id="empty"),
        pytest.param({"url": "https://example.com", "port": 443}, id="flat"),
        pytest.param({"a": {"b": [1, 2.5, None, True, "x"]}}, id="nested"),
        pytest.param({"ключ": "значение", "emoji": "🚀"}, id="unicode"),
        pytest.param({"sql": "'; DROP TABLE x;--"}, id="sql-metacharacters"),
        pytest.param(LARGEST_METADATA, id="exactly-64KiB"),
    ],
)
def test_metadata_accepts_json_dicts_up_to_64_kib(value: dict[str, Any]) -> None:
    """A dict that JSON round-trips unchanged is accepted and copied."""
    result = validation.metadata(value)
    assert result == value
    assert result is not value


def test_metadata_none_is_an_empty_dict() -> None:
    """Leaving metadata out stores an empty dict."""
    assert validation.metadata(None) == {}


def test_largest_metadata_is_exactly_the_limit() -> None:
    """The boundary case above really encodes to 64 KiB."""
    encoded = json.dumps(LARGEST_METADATA, ensure_ascii=False).encode("utf-8")
    assert len(encoded) == validation.METADATA_BYTES


def _deeply_nested(depth: int) -> dict[str, Any]:
    root: dict[str, Any] = {}
    node = root
    for _ in range(depth):
        child: dict[str, Any] = {}
        node["a"] = child
        node = child
    return root


@pytest.mark.parametrize(
    ("value", "error"),
    [
        pytest.param([("a", 1)], ArgumentTypeError, id="list"),
        pytest.param("{}", ArgumentTypeError, id="json-string"),
        pytest.param(42, ArgumentTypeError, id="int"),
        pytest.param({1: "a"}, InvalidArgumentError, id="int-key"),
        pytest.param({None: "a"}, InvalidArgumentError, id="None-key"),
        pytest.param({True: "a"}, InvalidArgumentError, id="bool-key"),
        pytest.param({("a", "b"): 1}, InvalidArgumentError, id="tuple-key"),
        pytest.param({"a": {2: "nested-int-key"}}, InvalidArgumentError, id="nested-int-key"),
        pytest.param({"a": (1, 2)}, InvalidArgumentError, id="tuple"),
        pytest.param({"a": {1, 2}}, InvalidArgumentError, id="set"),
        pytest.param({"a": float("nan")}, InvalidArgumentError, id="nan"),
        pytest.param({"a": float("inf")}, InvalidArgumentError, id="inf"),
        pytest.param({"a": [1, {"b": float("nan")}]}, InvalidArgumentError, id="nested-nan"),
        pytest.param({"a": object()}, InvalidArgumentError, id="object"),
        pytest.param({"a": AWARE}, InvalidArgumentError, id="datetime"),
        pytest.param({"a": b"bytes"}, InvalidArgumentError, id="bytes"),
        pytest.param({"a": "\ud800"}, InvalidArgumentError, id="lone-surrogate-value"),
        pytest.param({"\udc00": 1}, InvalidArgumentError, id="lone-surrogate-key"),
        pytest.param(
            {"k": "x" * (validation.METADATA_BYTES - _EMPTY_ENCODED + 1)},
            InvalidArgumentError,
            id="64KiB-plus-one-byte",
        ),
        pytest.param({"k": "é" * 40_000}, InvalidArgumentError, id="over-64KiB-in-utf8-bytes"),
        pytest.param(_deeply_nested(100_000), InvalidArgumentError, id="too-deep"),
    ],
)
def test_metadata_refuses(value: object, error: type[BramaError]) -> None:
    """Not a dict, not JSON, not round-tripping, or too large: refused, naming metadata."""
    _refuses(lambda: validation.metadata(value), error, "metadata")


def test_metadata_refuses_a_cycle() -> None:
    """A dict that contains itself cannot be encoded."""
    cyclic: dict[str, Any] = {}
    cyclic["self"] = cyclic
    _refuses(lambda: validation.metadata(cyclic), InvalidArgumentError, "metadata")


def test_metadata_refuses_a_nul_character() -> None:
    """NUL is refused in metadata as it is in identifiers and reasons."""
    _refuses(lambda: validation.metadata({"a": "nul\x00here"}), InvalidArgumentError, "metadata")


# -- moments and limits ----------------------------------------------------------------------


class _NoOffset(tzinfo):
    """A tzinfo that does not know its offset: the datetime counts as naive."""

    def utcoffset(self, dt: datetime | None) -> timedelta | None:
        return None

    def dst(self, dt: datetime | None) -> timedelta | None:
        return None

    def tzname(self, dt: datetime | None) -> str | None:
        return None


@pytest.mark.parametrize(
    "value",
    [
        None,
        AWARE,
        AWARE.astimezone(timezone(timedelta(hours=-5))),
    ],
)
def test_moment_accepts_none_and_aware_datetimes(value: datetime | None) -> None:
    """``since`` may be left out or any aware datetime; it comes back in UTC."""
    moment = validation.moment(value, "since")
    assert moment == value
    assert moment is None or moment.tzinfo is timezone.utc


@pytest.mark.parametrize(
    ("value", "meant"),
    [
        (datetime.min.replace(tzinfo=timezone.utc), validation.EARLIEST),
        (datetime(1, 1, 1, 1, tzinfo=timezone(timedelta(hours=2))), validation.EARLIEST),
        (datetime(1969, 12, 31, 23, 59, tzinfo=timezone.utc), validation.EARLIEST),
        (
            datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-2))),
            datetime.max.replace(tzinfo=timezone.utc),
        ),
    ],
)
def test_moment_reads_times_out_of_any_logs_range_as_its_ends(
    value: datetime, meant: datetime
) -> None:
    """Before 1970 nothing was logged, and past 9999 nothing can be: no database overflows."""
    assert validation.moment(value, "since") == meant


def test_limit_beyond_any_log_means_no_limit() -> None:
    assert validation.limit(2**31 - 1) == 2**31 - 1
    assert validation.limit(2**63) is None


@pytest.mark.parametrize(
    ("value", "error"),
    [
        pytest.param(datetime(2024, 3, 1, 12, 0), InvalidArgumentError, id="naive"),
        pytest.param(
            datetime(2024, 3, 1, tzinfo=_NoOffset()),
            InvalidArgumentError,
            id="tzinfo-without-offset",
        ),
        pytest.param(date(2024, 3, 1), ArgumentTypeError, id="date"),
        pytest.param("2024-03-01T12:00:00Z", ArgumentTypeError, id="iso-string"),
        pytest.param(1_709_294_400, ArgumentTypeError, id="timestamp"),
    ],
)
def test_moment_refuses_naive_and_non_datetime_values(
    value: object, error: type[BramaError]
) -> None:
    """A naive datetime is ambiguous; other types are not datetimes."""
    _refuses(lambda: validation.moment(value, "since"), error, "since")


@pytest.mark.parametrize("value", [None, 0, 1, 10_000])
def test_limit_accepts_none_and_non_negative_ints(value: int | None) -> None:
    """limit=0 is allowed (no events); None means no limit."""
    assert validation.limit(value) == value


@pytest.mark.parametrize(
    ("value", "error"),
    [
        pytest.param(-1, InvalidArgumentError, id="negative"),
        pytest.param(True, ArgumentTypeError, id="True"),
        pytest.param(False, ArgumentTypeError, id="False"),
        pytest.param(1.0, ArgumentTypeError, id="float"),
        pytest.param("10", ArgumentTypeError, id="str"),
    ],
)
def test_limit_refuses(value: object, error: type[BramaError]) -> None:
    """Negative, bool and non-int limits are refused."""
    _refuses(lambda: validation.limit(value), error, "limit")


# -- the clock -------------------------------------------------------------------------------


def test_read_returns_an_aware_clock_time_in_utc() -> None:
    """Any aware time is accepted and converted to UTC, denoting the same instant."""
    eastern = AWARE.astimezone(timezone(timedelta(hours=-5)))

    now = read(lambda: eastern)

    assert now == AWARE
    assert now.utcoffset() == timedelta(0)
    assert now.tzinfo is timezone.utc


@pytest.mark.parametrize(
    ("value", "error"),
    [
        pytest.param(datetime(2024, 3, 1, 12, 0), InvalidArgumentError, id="naive"),
        pytest.param(
            datetime(2024, 3, 1, tzinfo=_NoOffset()),
            InvalidArgumentError,
            id="tzinfo-without-offset",
        ),
        pytest.param(1_709_294_400.0, ArgumentTypeError, id="timestamp"),
        pytest.param("2024-03-01T12:00:00+00:00", ArgumentTypeError, id="str"),
        pytest.param(date(2024, 3, 1), ArgumentTypeError, id="date"),
        pytest.param(None, ArgumentTypeError, id="None"),
    ],
)
def test_read_refuses_naive_or_non_datetime_clock_values(
    value: object, error: type[BramaError]
) -> None:
    """A clock that returns a naive time or no datetime at all is refused, naming the clock."""
    with pytest.raises(error, match="clock") as caught:
        read(lambda: value)  # type: ignore[arg-type, return-value]
    assert isinstance(caught.value, BramaError)


def test_metadata_nesting_is_limited_the_same_on_every_dialect() -> None:
    """16 levels of dicts and lists are accepted, 17 are not (MariaDB refuses JSON deeper than
    32, and a configured event nests the metadata two levels down)."""
    assert validation.metadata(_deeply_nested(validation.METADATA_DEPTH - 1))
    _refuses(
        lambda: validation.metadata(_deeply_nested(validation.METADATA_DEPTH)),
        InvalidArgumentError,
        "metadata",
    )
    _refuses(
        lambda: validation.metadata({"a": [[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]}),
        InvalidArgumentError,
        "metadata",
    )


@pytest.mark.parametrize("number", [1e16, -1e16, 2.0**53, 123.5, 1e-7, 1.7976931348623157e-300])
def test_metadata_keeps_floats_that_every_database_reads_back_equal(number: float) -> None:
    assert validation.metadata({"n": number}) == {"n": number}


@pytest.mark.parametrize("number", [1e23, -1.5e300, 2.0**60, 9.87654321e25])
def test_metadata_refuses_floats_that_jsonb_would_read_back_as_another_number(
    number: float,
) -> None:
    _refuses(lambda: validation.metadata({"n": [number]}), InvalidArgumentError, "metadata")
