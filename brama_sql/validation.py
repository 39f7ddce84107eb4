"""Checks of the arguments of the public API. Every check raises before anything is written."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from brama_sql.circuit import EXPIRY_STRATEGIES, Settings
from brama_sql.errors import ArgumentTypeError, InvalidArgumentError
from brama_sql.schema import IDENTIFIER_LENGTH, REASON_LENGTH

METADATA_BYTES = 65_536
"""The largest metadata accepted, in bytes of its JSON encoding."""
METADATA_DEPTH = 16
"""The deepest nesting of dicts and lists accepted in metadata (the top dict is level 1).
MariaDB refuses JSON nested deeper than 32, and a ``configured`` event nests the metadata two
levels down in its details."""
EXACT_FLOAT_LIMIT = 1e16
"""From this magnitude on, a float's JSON text has an exponent; PostgreSQL's ``jsonb`` prints
it back as the integer the text names, which is another number unless the float is whole."""
MAX_SECONDS = 10 * 365 * 86_400.0
"""The longest duration accepted for ``expiry`` and ``inactive_after``: ten years."""
MAX_LOCK_WAIT = 3600.0
"""The longest ``lock_timeout`` accepted: an hour (a lock wait limit is meant to be short)."""
MAX_THRESHOLD = 2**31 - 1


def identifier(value: object, name: str = "identifier") -> str:
    """A non-empty, non-blank string of at most 255 characters that every database can store."""
    if not isinstance(value, str):
        raise ArgumentTypeError(f"{name} must be a str, not {type(value).__name__}")
    if not value.strip():
        raise InvalidArgumentError(f"{name} must not be empty or blank")
    if len(value) > IDENTIFIER_LENGTH:
        raise InvalidArgumentError(
            f"{name} must be at most {IDENTIFIER_LENGTH} characters, not {len(value)}"
        )
    _storable_text(value, name)
    return value


def scope(value: object) -> str | None:
    """``None`` (the unscoped connection) or a valid identifier."""
    return None if value is None else identifier(value, "scope")


def reason(value: object) -> str | None:
    """``None`` or a string of at most 1024 characters."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ArgumentTypeError(f"reason must be a str or None, not {type(value).__name__}")
    if len(value) > REASON_LENGTH:
        raise InvalidArgumentError(
            f"reason must be at most {REASON_LENGTH} characters, not {len(value)}"
        )
    _storable_text(value, "reason")
    return value


def metadata(value: object) -> dict[str, Any]:
    """A dict that JSON encodes and decodes back to an equal dict, of at most 64 KiB."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ArgumentTypeError(f"metadata must be a dict, not {type(value).__name__}")
    _check_depth(value, 1)
    try:
        encoded = json.dumps(value, allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError) as error:
        raise InvalidArgumentError(f"metadata must be JSON-encodable: {error}") from None
    if json.loads(encoded) != value:
        raise InvalidArgumentError(
            "metadata must survive a JSON round trip unchanged (string keys, lists not tuples)"
        )
    for text in _strings(value):
        _storable_text(text, "metadata")
    for number in _floats(value):
        if abs(number) >= EXACT_FLOAT_LIMIT and int(Decimal(repr(number))) != number:
            raise InvalidArgumentError(
                f"metadata number {number!r} cannot be stored exactly on every database "
                "(PostgreSQL's jsonb reads it back as another, whole number): store it as a "
                "string or an int"
            )
    size = len(encoded.encode("utf-8"))
    if size > METADATA_BYTES:
        raise InvalidArgumentError(
            f"metadata must encode to at most {METADATA_BYTES} bytes of JSON, not {size}"
        )
    return dict(value)


def threshold(value: object, name: str = "failure_threshold") -> int:
    """A whole number from 1 to 2**31 - 1 (``bool`` is refused)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ArgumentTypeError(f"{name} must be an int, not {type(value).__name__}")
    if not 1 <= value <= MAX_THRESHOLD:
        raise InvalidArgumentError(f"{name} must be between 1 and {MAX_THRESHOLD}, not {value}")
    return value


def seconds(value: object, name: str, maximum: float = MAX_SECONDS) -> float:
    """A positive, finite duration of at most ``maximum`` seconds (ten years unless said), as
    seconds or a ``timedelta``, resolved to whole microseconds like every time brama_sql stores."""
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ArgumentTypeError(
            f"{name} must be seconds (int or float) or a timedelta, not {type(value).__name__}"
        )
    try:
        result = float(value)
    except OverflowError:
        raise InvalidArgumentError(f"{name} must be at most {maximum:.0f} seconds") from None
    if not math.isfinite(result) or result <= 0:
        raise InvalidArgumentError(f"{name} must be a positive number of seconds, not {value!r}")
    if result > maximum:
        raise InvalidArgumentError(f"{name} must be at most {maximum:.0f} seconds, not {value!r}")
    resolved = timedelta(seconds=result).total_seconds()  # microseconds, as every timestamp
    if resolved <= 0:
        raise InvalidArgumentError(f"{name} must be at least one microsecond, not {value!r}")
    return resolved


def optional_seconds(value: object, name: str) -> float | None:
    """``None`` or :func:`seconds`."""
    return None if value is None else seconds(value, name)


EARLIEST = datetime(1970, 1, 1, tzinfo=timezone.utc)
"""Nothing brama_sql logs is older: an earlier ``since`` means the same as this one."""
MAX_LIMIT = 2**31 - 1
"""A larger ``limit`` means the same as no limit (and would overflow some databases)."""


def moment(value: object, name: str) -> datetime | None:
    """``None`` or an aware datetime, in UTC; times before 1970 are read as 1970."""
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise ArgumentTypeError(f"{name} must be a datetime, not {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidArgumentError(f"{name} must be timezone-aware")
    offset = value.utcoffset()
    assert offset is not None
    if value.replace(tzinfo=None) < EARLIEST.replace(tzinfo=None) + offset:
        return EARLIEST
    try:
        return value.astimezone(timezone.utc)
    except OverflowError:  # after the year 9999 in UTC: later than anything logged
        return datetime.max.replace(tzinfo=timezone.utc)


def limit(value: object) -> int | None:
    """``None`` or a non-negative int (``None`` above 2**31 - 1: no log is that long)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ArgumentTypeError(f"limit must be an int or None, not {type(value).__name__}")
    if value < 0:
        raise InvalidArgumentError(f"limit must not be negative, not {value}")
    return None if value > MAX_LIMIT else value


def _check_depth(value: object, level: int) -> None:
    """Refuse dicts and lists nested deeper than :data:`METADATA_DEPTH` (before encoding, so
    no depth reaches Python's recursion limit)."""
    if not isinstance(value, (dict, list)):
        return
    if level > METADATA_DEPTH:
        raise InvalidArgumentError(
            f"metadata must be nested at most {METADATA_DEPTH} levels deep (dicts and lists)"
        )
    for item in value.values() if isinstance(value, dict) else value:
        _check_depth(item, level + 1)


def _floats(value: object) -> Iterator[float]:
    """Every float in a decoded JSON value."""
    if isinstance(value, float):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _floats(item)
    elif isinstance(value, list):
        for item in value:
            yield from _floats(item)


def _strings(value: object) -> Iterator[str]:
    """Every string in a decoded JSON value, keys included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _storable_text(value: str, name: str) -> None:
    if "\x00" in value:
        raise InvalidArgumentError(f"{name} must not contain NUL characters")
    if _has_surrogate(value):
        raise InvalidArgumentError(f"{name} must be valid Unicode (it has a lone surrogate)")


def _has_surrogate(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _float(value: int | float) -> float:
    """``value`` as a float; an int too large for one is an infinity (of its sign), which the
    range checks then refuse with their message instead of an ``OverflowError``."""
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def rate(value: object, name: str) -> float | None:
    """``None`` (off) or a share ``r`` with ``0 < r <= 1``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ArgumentTypeError(f"{name} must be a number or None, not {type(value).__name__}")
    result = _float(value)
    if not 0 < result <= 1:
        raise InvalidArgumentError(f"{name} must be more than 0 and at most 1, not {value!r}")
    return result


def backoff_factor(value: object) -> float:
    """A finite number of at least 1."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ArgumentTypeError(f"backoff_factor must be a number, not {type(value).__name__}")
    result = _float(value)
    if not math.isfinite(result) or result < 1 or result > MAX_SECONDS:
        raise InvalidArgumentError(f"backoff_factor must be a finite number >= 1, not {value!r}")
    return result


def expiry_strategy(value: object) -> str:
    """``"fixed"`` or ``"exponential"``."""
    if not isinstance(value, str):
        raise ArgumentTypeError(f"expiry_strategy must be a str, not {type(value).__name__}")
    if value not in EXPIRY_STRATEGIES:
        raise InvalidArgumentError(
            f"expiry_strategy must be one of {', '.join(map(repr, EXPIRY_STRATEGIES))}, "
            f"not {value!r}"
        )
    return value


POLICY_CHECKS: dict[str, Callable[[object], Any]] = {
    "expiry_strategy": expiry_strategy,
    "backoff_factor": backoff_factor,
    "max_expiry": lambda value: optional_seconds(value, "max_expiry"),
    "failure_rate_threshold": lambda value: rate(value, "failure_rate_threshold"),
    "window": lambda value: optional_seconds(value, "window"),
    "minimum_calls": lambda value: None if value is None else threshold(value, "minimum_calls"),
    "slow_call_duration": lambda value: optional_seconds(value, "slow_call_duration"),
    "slow_call_rate_threshold": lambda value: rate(value, "slow_call_rate_threshold"),
}
"""Each policy option (see :class:`~brama_sql.policies.Policies`) and its check, which
returns its JSON form (durations in seconds)."""


def policies(given: Mapping[str, object]) -> dict[str, Any]:
    """The policy options in ``given`` checked, in their JSON form; any other name is an
    :class:`ArgumentTypeError`, as an unknown keyword argument would be."""
    unknown = sorted(name for name in given if name not in POLICY_CHECKS)
    if unknown:
        raise ArgumentTypeError(
            f"unexpected keyword argument {', '.join(map(repr, unknown))} (the policy options "
            f"are {', '.join(POLICY_CHECKS)})"
        )
    return {name: POLICY_CHECKS[name](value) for name, value in given.items()}


def settings(value: Settings) -> Settings:
    """Settings whose options agree with each other: ``max_expiry`` at least ``expiry``, and
    a ``slow_call_rate_threshold`` only with a ``slow_call_duration``."""
    if value.max_expiry is not None and value.max_expiry < value.expiry:
        raise InvalidArgumentError(
            f"max_expiry ({value.max_expiry.total_seconds()!r} s) must be at least the expiry "
            f"({value.expiry.total_seconds()!r} s)"
        )
    if value.slow_call_rate_threshold is not None and value.slow_call_duration is None:
        raise InvalidArgumentError(
            "slow_call_rate_threshold needs slow_call_duration (which calls are slow)"
        )
    return value


def duration(value: object) -> float | None:
    """``None`` or a call's duration: non-negative, finite seconds or a ``timedelta``."""
    if value is None:
        return None
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ArgumentTypeError(
            f"duration must be seconds (int or float) or a timedelta, not {type(value).__name__}"
        )
    result = _float(value)
    if not math.isfinite(result) or result < 0 or result > MAX_SECONDS:
        raise InvalidArgumentError(
            f"duration must be a non-negative, finite number of seconds, not {value!r}"
        )
    return timedelta(seconds=result).total_seconds()
