"""Where brama_sql takes the current time from."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone

from brama_sql.errors import ArgumentTypeError, InvalidArgumentError

Clock = Callable[[], datetime]
"""A callable returning the current time as an aware datetime."""


def system_clock() -> datetime:
    """The Python clock: ``datetime.now(timezone.utc)`` (freezegun drives it in tests)."""
    return datetime.now(timezone.utc)


def read(clock: Clock) -> datetime:
    """Call ``clock`` and return its time in UTC, refusing naive or non-datetime values."""
    now = clock()
    if not isinstance(now, datetime):
        raise ArgumentTypeError(f"the clock returned {type(now).__name__}, not a datetime")
    if now.tzinfo is None or now.utcoffset() is None:
        raise InvalidArgumentError("the clock returned a naive datetime; it must be timezone-aware")
    return now.astimezone(timezone.utc)
