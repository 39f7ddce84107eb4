"""Streaming the log: ``Brama.stream_events()`` and ``brama-sql events`` hold one page at a time
whatever the log's length (measured with tracemalloc against a log ten times longer), and the
filters ``since``, ``until``, ``kinds`` and ``newest`` select what they say, on every database."""

from __future__ import annotations

import gc
import json
import re
import tracemalloc
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner
from freezegun import freeze_time
from sqlalchemy import create_engine, insert, select
from sqlalchemy.engine import URL

from brama_sql import ArgumentTypeError, Brama, InvalidArgumentError, Kind
from brama_sql.cli import main
from brama_sql.schema import connections, events

START = datetime(2031, 6, 1, 8, 0, tzinfo=timezone.utc)
PAGE = 50


def bulk_log(brama: Brama, identifier: str, count: int) -> None:
    """Append ``count`` success events of ``identifier`` straight into the log (fast; only the
    reads are under test), one second apart from START."""
    engine = create_engine(brama.engine.url)
    with engine.begin() as conn:
        row_id = conn.execute(
            select(connections.c.id).where(connections.c.identifier == identifier)
        ).scalar_one()
        rows = [
            {
                "connection_id": row_id,
                "identifier": identifier,
                "scope": "",
                "kind": "success",
                "occurred_at": START + timedelta(seconds=number),
                "failure_count": 0,
                "probe": False,
                "reason": f"call {number:06d} with a reason long enough to weigh something",
            }
            for number in range(count)
        ]
        for first in range(0, count, 5_000):
            conn.execute(insert(events), rows[first : first + 5_000])
    engine.dispose()


def peak_while_streaming(brama: Brama, identifier: str) -> tuple[int, int]:
    """(events seen, peak bytes allocated) while consuming the stream and keeping nothing."""
    gc.collect()
    tracemalloc.start()
    try:
        seen = 0
        for _ in brama.stream_events(identifier, page_size=PAGE):
            seen += 1
        return seen, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_the_stream_holds_a_page_whatever_the_log_length(tmp_path: Path) -> None:
    """On SQLite only: what is held is Python's (each driver buffers one page's rows)."""
    brama = Brama(f"sqlite:///{tmp_path / 'long.db'}")
    brama.migrate()
    with freeze_time(START):
        brama.register("short")
        brama.register("long")
    bulk_log(brama, "short", 600)
    bulk_log(brama, "long", 6_000)
    peak_while_streaming(brama, "short")  # warm up: compiled statements, pool, imports
    short, short_peak = peak_while_streaming(brama, "short")
    long, long_peak = peak_while_streaming(brama, "long")
    assert (short, long) == (601, 6_001)  # the registered event, then the bulk
    # Ten times the events, not ten times the memory: a page at a time.
    assert long_peak < 1.5 * short_peak, (short_peak, long_peak)
    everything = brama.events("long")
    gc.collect()
    tracemalloc.start()
    held = brama.events("long")
    listed_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert held == everything
    brama.dispose()
    assert long_peak * 4 < listed_peak, (long_peak, listed_peak)


def test_the_cli_streams_every_event_in_order(
    db_url: URL, make_brama: Callable[..., Brama]
) -> None:
    brama = make_brama()
    with freeze_time(START):
        brama.register("long")
    bulk_log(brama, "long", 1_234)  # more than two pages of the command's page size
    url = db_url.render_as_string(hide_password=False)
    printed = CliRunner().invoke(main, ["--url", url, "events", "long"])
    assert printed.exit_code == 0, printed.output
    lines = printed.stdout.splitlines()
    assert re.split(r"\s{2,}", lines[0].strip())[:2] == ["ID", "OCCURRED AT"]
    ids = [int(re.split(r"\s{2,}", line.strip())[0]) for line in lines[1:]]
    assert ids == [event.id for event in brama.events("long")]
    as_json = CliRunner().invoke(main, ["--url", url, "events", "long", "--json", "--newest", "3"])
    assert [item["id"] for item in json.loads(as_json.stdout)] == ids[-3:]


def test_filters_select_what_they_say(db_url: URL, make_brama: Callable[..., Brama]) -> None:
    brama = make_brama(failure_threshold=2)
    with freeze_time(START) as clock:
        brama.register("svc")
        brama.register("other", scope="a")
        clock.move_to(START + timedelta(minutes=10))
        brama.failure("svc", reason="one")
        brama.failure("svc", reason="two")  # trips
        clock.move_to(START + timedelta(minutes=20))
        brama.success("other", scope="a")
        clock.move_to(START + timedelta(minutes=30))
        brama.close("svc")
    logged = brama.events()

    def ids(**filters: object) -> list[int]:
        return [event.id for event in brama.stream_events(page_size=2, **filters)]  # type: ignore[arg-type]

    at = [START + timedelta(minutes=minutes) for minutes in (10, 20, 30)]
    assert ids() == [event.id for event in logged]
    assert ids(since=at[0]) == [e.id for e in logged if e.occurred_at >= at[0]]
    assert ids(until=at[1]) == [e.id for e in logged if e.occurred_at < at[1]]
    assert ids(since=at[0], until=at[2]) == [e.id for e in logged if at[0] <= e.occurred_at < at[2]]
    assert ids(kinds=[Kind.TRANSITION]) == [e.id for e in logged if e.kind is Kind.TRANSITION]
    assert ids(kinds=["failure", "success"]) == [
        e.id for e in logged if e.kind in (Kind.FAILURE, Kind.SUCCESS)
    ]
    assert ids(newest=3) == [e.id for e in logged][-3:]
    assert ids(newest=100) == [e.id for e in logged]
    assert ids(newest=0) == []
    assert ids(limit=3) == [e.id for e in logged][:3]
    assert ids(newest=4, limit=2) == [e.id for e in logged][-4:-2]
    assert ids(kinds=["transition"], newest=1) == [
        [e.id for e in logged if e.kind is Kind.TRANSITION][-1]
    ]
    assert ids(scope="a") == [e.id for e in logged if e.scope == "a"]

    url = db_url.render_as_string(hide_password=False)

    def cli(*args: str) -> list[int]:
        with freeze_time(START + timedelta(minutes=35)):
            result = CliRunner().invoke(main, ["--url", url, "events", "--json", *args])
        assert result.exit_code == 0, result.output
        return [item["id"] for item in json.loads(result.stdout)]

    assert cli("--since", "20m") == [
        e.id for e in logged if e.occurred_at >= at[0] + timedelta(minutes=5)
    ]
    assert cli("--since", "2031-06-01T08:10:00Z", "--until", "2031-06-01 08:30") == [
        e.id for e in logged if at[0] <= e.occurred_at < at[2]
    ]
    assert cli("--since", "2031-06-01T10:10:00+02:00") == ids(since=at[0])
    assert cli("--kind", "transition", "--kind", "success") == ids(kinds=["transition", "success"])
    assert cli("--newest", "2") == ids(newest=2)
    empty = CliRunner().invoke(main, ["--url", url, "events", "--kind", "removed"])
    assert empty.stdout.strip() == "No events."
    for args in (["--since", "yesterday"], ["--kind", "bogus"], ["--newest", "-1"]):
        refused = CliRunner().invoke(main, ["--url", url, "events", *args])
        assert refused.exit_code == 2 and args[0] in refused.stderr


@pytest.mark.parametrize(
    ("filters", "error"),
    [
        ({"kinds": "transition"}, ArgumentTypeError),
        ({"kinds": [3]}, ArgumentTypeError),
        ({"kinds": ["tripped"]}, InvalidArgumentError),
        ({"until": datetime(2031, 6, 1)}, InvalidArgumentError),
        ({"newest": -1}, InvalidArgumentError),
        ({"page_size": 0}, InvalidArgumentError),
    ],
)
def test_bad_filters_are_refused_at_the_call(
    brama: Brama, filters: dict[str, object], error: type[Exception]
) -> None:
    with pytest.raises(error):
        brama.stream_events(**filters)  # type: ignore[arg-type]
