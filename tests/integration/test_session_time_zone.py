"""brama_sql's PostgreSQL engines run their sessions in UTC (psycopg then reads every time as
UTC, with no conversion per value); a URL that names another time zone keeps it, and the times
read are the same instants, in UTC, either way."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from freezegun import freeze_time
from sqlalchemy import text
from sqlalchemy.engine import URL

from brama_sql import Brama

pytestmark = pytest.mark.parametrize("dialect", ["postgresql"], indirect=True)

AT = datetime(2026, 11, 30, 17, 45, 1, 123456, tzinfo=timezone.utc)


def _zone_and_times(url: URL) -> tuple[str, list[datetime]]:
    """The session time zone of a Brama on ``url``, and the times it reads back of a connection
    registered and failed at ``AT``: a status's, a listing's and the events'."""
    brama = Brama(url)
    try:
        with freeze_time(AT):
            brama.register("svc")
            brama.failure("svc")
        with brama.engine.connect() as conn:
            zone = str(conn.execute(text("SHOW TimeZone")).scalar_one())
        status = brama.status("svc")
        (listed,) = brama.connections()
        event_times = [event.occurred_at for event in brama.events("svc")]
    finally:
        brama.dispose()
    return zone, [
        status.registered_at,
        listed.registered_at,
        listed.last_failure_time,
        *event_times,
    ]


@pytest.mark.parametrize(
    ("options", "zone"),
    [(None, "UTC"), ("-c TimeZone=Asia/Kolkata", "Asia/Kolkata")],
    ids=["default", "named-by-the-url"],
)
def test_sessions_run_in_utc_unless_the_url_names_a_zone_and_times_read_in_utc(
    db_url: URL, options: str | None, zone: str
) -> None:
    url = db_url if options is None else db_url.update_query_dict({"options": options})
    found, times = _zone_and_times(url)
    assert found == zone
    assert all(value.tzinfo is timezone.utc for value in times), times
    assert times[:3] == [AT, AT, AT]
    assert all(value.utcoffset() == timedelta(0) for value in times)
