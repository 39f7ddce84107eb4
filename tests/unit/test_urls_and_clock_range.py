"""URLs the constructor cannot use are an InvalidArgumentError that never contains the password;
a clock's time outside 1970 to 9000 is refused (the database's clock too)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from brama_sql import Brama, InvalidArgumentError
from brama_sql.clock import EARLIEST, LATEST, in_range, read

SECRET = "s3cr3t-Pa55"
BAD_URLS = {
    "port-not-a-number": f"postgresql://user:{SECRET}@db.example:notaport/app",
    "port-out-of-range": f"postgresql+psycopg://user:{SECRET}@db.example:70000/app",
    "port-zero": f"mysql+pymysql://user:{SECRET}@db.example:0/app",
    "broken-ipv6": f"postgresql://user:{SECRET}@[::1/app",
    "unknown-driver": f"postgresql+nosuchdriver://user:{SECRET}@db.example/app",
    "unknown-dialect": f"nosuchdialect://user:{SECRET}@db.example/app",
    "garbage": f"user:{SECRET} at db.example",
    "empty": "",
}


def _messages(error: BaseException | None) -> list[str]:
    """The messages of ``error`` and of every error that caused it."""
    found = []
    while error is not None:
        found.append(str(error))
        error = error.__cause__ or error.__context__
    return found


@pytest.mark.parametrize("url", BAD_URLS.values(), ids=BAD_URLS.keys())
def test_a_bad_url_is_an_invalid_argument_without_the_password(url: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        Brama(url)
    assert caught.value.argument == "url"
    assert str(caught.value).startswith("url ")
    assert "\n" not in str(caught.value)
    for message in _messages(caught.value):
        assert SECRET not in message


def test_a_password_in_the_query_is_hidden_too() -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        Brama(f"nosuchdialect://user@db.example/app?password={SECRET}")
    assert SECRET not in str(caught.value) and "password=hidden" in str(caught.value)


@pytest.mark.parametrize(
    "moment",
    [
        datetime(9999, 12, 31, 23, 59, tzinfo=timezone.utc),
        LATEST,
        datetime(1969, 12, 31, 23, 59, 59, tzinfo=timezone.utc),
        datetime(1, 1, 1, tzinfo=timezone.utc),
        datetime(9999, 12, 31, 23, 0, tzinfo=timezone(timedelta(hours=-5))),  # overflows in UTC
        datetime(1, 1, 1, 1, 0, tzinfo=timezone(timedelta(hours=5))),  # underflows in UTC
    ],
)
def test_times_outside_the_accepted_range_are_refused(moment: datetime) -> None:
    with pytest.raises(InvalidArgumentError, match="outside the times brama_sql accepts"):
        read(lambda: moment)
    with pytest.raises(InvalidArgumentError, match="the database's clock returned"):
        in_range(moment, "the database's clock")


def test_the_range_is_inclusive_at_1970_and_ends_before_9000() -> None:
    assert read(lambda: EARLIEST) == EARLIEST
    last = LATEST - timedelta(microseconds=1)
    assert read(lambda: last) == last
    eastern = datetime(2030, 1, 1, 12, tzinfo=timezone(timedelta(hours=3)))
    assert read(lambda: eastern) == datetime(2030, 1, 1, 9, tzinfo=timezone.utc)
