"""Where brama_sql takes the current time from."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone

from sqlalchemy import text
from sqlalchemy.engine import Connection

from brama_sql.errors import ArgumentTypeError, InvalidArgumentError

Clock = Callable[[], datetime]
"""A callable returning the current time as an aware datetime."""
EARLIEST = datetime(1970, 1, 1, tzinfo=timezone.utc)
LATEST = datetime(9000, 1, 1, tzinfo=timezone.utc)
"""The times brama_sql accepts from a clock: from 1970 (nothing it logs is older) to before the
year 9000, which leaves room for expiries, permits and durations of up to ten years before the
year 9999, the last that MariaDB/MySQL's ``DATETIME`` and Python's ``datetime`` hold."""


def system_clock() -> datetime:
    """The Python clock: ``datetime.now(timezone.utc)`` (freezegun drives it in tests)."""
    return datetime.now(timezone.utc)


def read(clock: Clock) -> datetime:
    """Call ``clock`` and return its time in UTC, refusing naive or non-datetime values."""
    if clock is system_clock:  # the default: an aware UTC datetime, only its range to check
        now = datetime.now(timezone.utc)
        return now if EARLIEST <= now < LATEST else in_range(now, "the clock")
    now = clock()
    if not isinstance(now, datetime):
        raise ArgumentTypeError(f"the clock returned {type(now).__name__}, not a datetime")
    if now.tzinfo is None or now.utcoffset() is None:
        raise InvalidArgumentError("the clock returned a naive datetime; it must be timezone-aware")
    return in_range(now, "the clock")


def in_range(now: datetime, source: str) -> datetime:
    """``now`` (aware) in UTC, if it lies from :data:`EARLIEST` to before :data:`LATEST`; else
    :class:`InvalidArgumentError`, before anything is written, so that no row holds a time
    whose later arithmetic overflows."""
    try:
        utc = now.astimezone(timezone.utc)
    except OverflowError:  # beyond the year 9999 or before the year 1 in UTC
        utc = None
    if utc is None or not EARLIEST <= utc < LATEST:
        raise InvalidArgumentError(
            f"{source} returned {now.isoformat()}, outside the times brama_sql accepts "
            f"({EARLIEST:%Y-%m-%d} to {LATEST:%Y-%m-%d} UTC); nothing was written",
            argument="clock",
        )
    return utc


DATABASE = "database"
"""``Brama(clock="database")``: take every timestamp from the database server."""


def database_now(conn: Connection) -> datetime:
    """The database server's current time in UTC, read inside the caller's transaction.

    PostgreSQL's ``clock_timestamp()`` (not ``now()``, which is the transaction's start),
    MySQL's ``UTC_TIMESTAMP(6)``, SQLite's ``strftime('%Y-%m-%d %H:%M:%f', 'now')`` (milliseconds).
    """
    dialect = conn.dialect.name
    if dialect == "postgresql":
        value = conn.execute(text("SELECT clock_timestamp()")).scalar_one()
    elif dialect == "mysql":
        value = conn.execute(text("SELECT UTC_TIMESTAMP(6)")).scalar_one()
    elif dialect == "sqlite":
        stamp = conn.execute(text("SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')")).scalar_one()
        value = datetime.fromisoformat(stamp)
    else:
        value = conn.execute(text("SELECT CURRENT_TIMESTAMP")).scalar_one()
    if not isinstance(value, datetime):
        raise TypeError(f"the database returned {value!r} as its time")
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return in_range(value, "the database's clock")
