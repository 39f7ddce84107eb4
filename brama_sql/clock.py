"""Where brama_sql takes the current time from."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone

from sqlalchemy import text
from sqlalchemy.engine import Connection

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
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)
