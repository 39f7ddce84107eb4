"""The status page (``brama_sql.status_page``): each connection's live state, metrics and
24-hour timeline from the window's transitions and the state at its start, metadata hidden
unless allowed, escaping, and its cost with 1,000 connections; on every dialect."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from freezegun import freeze_time
from freezegun.api import FrozenDateTimeFactory
from sqlalchemy import create_engine, func, insert, select

from brama_sql import Brama
from brama_sql.replay import verify
from brama_sql.schema import connections, events
from brama_sql.status_page import status_page_data, status_page_html

NOW = datetime(2031, 5, 6, 12, 0, tzinfo=timezone.utc)
HOUR = timedelta(hours=1)


@pytest.fixture
def clock() -> Iterator[FrozenDateTimeFactory]:
    with freeze_time(NOW - 30 * HOUR) as frozen:
        yield frozen


def timeline(data: dict[str, Any], identifier: str) -> list[tuple[str, datetime, datetime]]:
    (found,) = [item for item in data["connections"] if item["identifier"] == identifier]
    return [
        (
            segment["state"],
            datetime.fromisoformat(segment["start"]),
            datetime.fromisoformat(segment["end"]),
        )
        for segment in found["timeline"]
    ]


def write_day(brama: Brama, clock: FrozenDateTimeFactory) -> None:
    """30 hours of a small fleet: ``flaky`` trips before the window and recovers in it,
    ``steady`` is closed throughout, ``late`` is registered 2 h ago, ``held`` opened by hand
    1 h ago and half-open (by its expiry, which no call persisted) since."""
    brama.register("flaky", failure_threshold=2, expiry=60)
    brama.register("steady")
    brama.register("held", expiry=60)
    brama.failure("flaky")
    brama.failure("flaky")
    brama.success("steady")
    clock.move_to(NOW - 10 * HOUR)
    brama.success("flaky")
    clock.move_to(NOW - 2 * HOUR)
    brama.register("late", metadata={"token": "s3cret"})
    clock.move_to(NOW - HOUR)
    brama.open("held")
    clock.move_to(NOW)


def test_timelines_start_from_the_state_at_the_windows_start(
    brama: Brama, clock: FrozenDateTimeFactory
) -> None:
    write_day(brama, clock)
    data = status_page_data(brama)
    start = NOW - 24 * HOUR
    assert data["window"] == {
        "start": start.isoformat(),
        "end": NOW.isoformat(),
        "seconds": 86400.0,
    }
    assert data["states"] == {
        "unknown": 1,
        "closed": 2,
        "open": 0,
        "half_open": 1,
        "disabled": 0,
        "forced_open": 0,
    }
    assert timeline(data, "steady") == [("closed", start, NOW)]
    # flaky's expiry (open -> half_open) was persisted, stamped at its due time, before the
    # window: it was half-open when the window began, until its probe closed it.
    assert timeline(data, "flaky") == [
        ("half_open", start, NOW - 10 * HOUR),
        ("closed", NOW - 10 * HOUR, NOW),
    ]
    assert timeline(data, "late") == [("unknown", NOW - 2 * HOUR, NOW)]
    opened = NOW - HOUR
    assert timeline(data, "held") == [
        ("unknown", start, opened),
        ("open", opened, opened + timedelta(seconds=60)),
        ("half_open", opened + timedelta(seconds=60), NOW),
    ]
    trips = {item["identifier"]: item["trips_in_window"] for item in data["connections"]}
    assert trips == {"flaky": 0, "held": 1, "late": 0, "steady": 0}
    json.dumps(data)  # JSON-ready
    for item in brama.connections():
        verify(brama.engine, item.identifier, item.scope)


def test_the_page_draws_each_timeline_and_hides_metadata_values(
    brama: Brama, clock: FrozenDateTimeFactory
) -> None:
    write_day(brama, clock)
    brama.register("<script>alert(1)</script>", scope="x&y")
    page = status_page_html(brama, json_url="/status.json?a=1&b=2")
    assert page.startswith("<!DOCTYPE html>") and "<script" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "x&amp;y" in page
    assert 'href="/status.json?a=1&amp;b=2"' in page
    assert page.count("<svg") == 5
    held = page[page.index(">held<") :].split("</tr>")[0]
    assert re.findall(r'class="seg-(\w+)"', held) == ["unknown", "open", "half_open"]
    assert "s3cret" not in page and "hidden (1 key)" in page
    assert "token=s3cret" in status_page_html(brama, show_metadata=True)
    hidden = status_page_data(brama)
    (late,) = [item for item in hidden["connections"] if item["identifier"] == "late"]
    assert (late["metadata"], late["metadata_keys"]) == (None, ["token"])
    shown = status_page_data(brama, show_metadata=True)
    assert [item["metadata"] for item in shown["connections"] if item["identifier"] == "late"] == [
        {"token": "s3cret"}
    ]


def test_an_empty_database_has_an_empty_page(brama: Brama) -> None:
    assert "No connections registered." in status_page_html(brama)
    assert status_page_data(brama)["connections"] == []


def test_the_page_stays_fast_with_a_thousand_connections(brama: Brama) -> None:
    """1,000 connections, a tenth of them tripped in the window, and 20,000 old events: the
    page reads the window's transitions, not the log (docs/flask.md has the figures at
    1,000,000 events)."""
    names = [f"svc-{number:04d}" for number in range(1000)]
    engine = create_engine(brama.engine.url)
    with freeze_time(NOW - 3 * 24 * HOUR):
        brama.register("template")
    with engine.begin() as conn:
        row = dict(conn.execute(select(connections)).one()._mapping)
        del row["id"]
        conn.execute(insert(connections), [{**row, "identifier": name} for name in names])
        ids = dict(conn.execute(select(connections.c.identifier, connections.c.id)).all())
        old = NOW - 2 * 24 * HOUR
        conn.execute(
            insert(events),
            [
                {
                    "connection_id": ids[names[number % 1000]],
                    "identifier": names[number % 1000],
                    "scope": "",
                    "kind": "success",
                    "occurred_at": old,
                    "failure_count": 0,
                    "probe": False,
                }
                for number in range(20_000)
            ],
        )
        newest = conn.execute(select(func.max(events.c.id))).scalar_one()
        conn.execute(connections.update().values(tallied_through=newest, successes=20))
    engine.dispose()
    with freeze_time(NOW - HOUR):
        for name in names[::10]:
            brama.open(name)
    with freeze_time(NOW):
        started = time.perf_counter()
        page = status_page_html(brama)
        elapsed = time.perf_counter() - started
    assert page.count("<svg") == 1001
    assert page.count('class="seg-open"') == 100
    assert elapsed < 5.0, f"the page took {elapsed:.2f} s"
