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


def _times(brama: Brama) -> list[datetime]:
    status = brama.status("svc")
    (listed,) = brama.connections()
    event_times = [event.occurred_at for event in brama.events("svc")]
    return [status.registered_at, listed.registered_at, listed.last_failure_time, *event_times]


def _zone(brama: Brama) -> str:
    with brama.engine.connect() as conn:
        return str(conn.execute(text("SHOW TimeZone")).scalar_one())


def test_sessions_run_in_utc_and_read_utc_times(db_url: URL) -> None:
    brama = Brama(db_url)
    try:
        with freeze_time(AT):
            brama.register("svc")
            brama.failure("svc")
        assert _zone(brama) == "UTC"
        times = _times(brama)
        assert all(value.tzinfo is timezone.utc for value in times), times
        assert times[:3] == [AT, AT, AT]
    finally:
        brama.dispose()


def test_a_time_zone_the_url_names_is_kept_and_times_still_read_in_utc(db_url: URL) -> None:
    named = db_url.update_query_dict({"options": "-c TimeZone=Asia/Kolkata"})
    brama = Brama(named)
    try:
        with freeze_time(AT):
            brama.register("svc")
            brama.failure("svc")
        assert _zone(brama) == "Asia/Kolkata"
        times = _times(brama)
        assert all(value.tzinfo is timezone.utc for value in times), times
        assert times[:3] == [AT, AT, AT]
        assert times[0].utcoffset() == timedelta(0)
    finally:
        brama.dispose()
