"""The Prometheus collector on every database: the state gauges, the report counters from the
row tallies, trips from the row's episode counter, transitions by cause from the row's
``transitions`` tally (exact, the same from every process), seconds open under a frozen clock,
the scope filter, ``up`` when the database is away, and a scrape that never reads the log."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from freezegun import freeze_time
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import event

from brama_sql import Brama
from brama_sql.contrib.prometheus import BramaCollector, metrics_exposition
from brama_sql.replay import verify

START = datetime(2031, 6, 1, 8, 0, tzinfo=timezone.utc)
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(brama: Brama, **options: Any) -> Samples:
    """The samples of one :func:`metrics_exposition`, by name and sorted labels."""
    body, content_type = metrics_exposition(brama, **options)
    assert content_type.startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode("utf-8"))
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def test_metrics_follow_the_circuits(make_brama: Callable[..., Brama]) -> None:
    brama = make_brama(failure_threshold=2, expiry=60.0)
    with freeze_time(START) as clock:
        brama.register("api", scope="shop")
        brama.register("db")
        brama.success("api", scope="shop")
        brama.failure("db")  # unknown -> closed before the collector's first scrape
        first = scrape(brama)
        assert value(first, "brama_sql_up") == 1
        assert (
            value(
                first,
                "brama_sql_transitions_total",
                identifier="db",
                scope="",
                cause="report",
                to_state="closed",
            )
            == 1
        )  # counted from the row, also what came before the collector
        clock.tick(10)
        brama.failure("db")  # trips
        brama.open("api", scope="shop", reason="maintenance")
        clock.tick(30)
        samples = scrape(brama)

    for identifier, scope in (("api", "shop"), ("db", "")):
        states = {
            state: value(
                samples, "brama_sql_circuit_state", identifier=identifier, scope=scope, state=state
            )
            for state in ("unknown", "closed", "open", "half_open")
        }
        assert states == {"unknown": 0, "closed": 0, "open": 1, "half_open": 0}
        assert value(samples, "brama_sql_trips_total", identifier=identifier, scope=scope) == 1
        assert value(samples, "brama_sql_open_seconds", identifier=identifier, scope=scope) == 30
    assert value(samples, "brama_sql_successes_total", identifier="api", scope="shop") == 1
    assert value(samples, "brama_sql_failures_total", identifier="db", scope="") == 2
    assert value(samples, "brama_sql_consecutive_failures", identifier="db", scope="") == 2
    transitions = {
        labels: number
        for (name, labels), number in samples.items()
        if name == "brama_sql_transitions_total"
    }
    assert transitions == {
        (
            ("cause", "manual_open"),
            ("identifier", "api"),
            ("scope", "shop"),
            ("to_state", "open"),
        ): 1,
        (("cause", "report"), ("identifier", "api"), ("scope", "shop"), ("to_state", "closed")): 1,
        (("cause", "report"), ("identifier", "db"), ("scope", ""), ("to_state", "closed")): 1,
        (("cause", "report"), ("identifier", "db"), ("scope", ""), ("to_state", "open")): 1,
    }

    with freeze_time(START + timedelta(seconds=100)):  # db's expiry (60 s) has elapsed
        brama.success("db")  # the probe closes it: open -> half_open -> closed
        later = scrape(brama)
        again = scrape(brama)  # nothing new: the same counts, nothing counted twice
    assert later == again
    assert value(later, "brama_sql_circuit_state", identifier="db", scope="", state="closed") == 1
    assert value(later, "brama_sql_open_seconds", identifier="db", scope="") == 0
    assert (
        value(
            later,
            "brama_sql_transitions_total",
            identifier="db",
            scope="",
            cause="expiry",
            to_state="half_open",
        )
        == 1
    )
    assert (
        value(
            later,
            "brama_sql_transitions_total",
            identifier="db",
            scope="",
            cause="report",
            to_state="closed",
        )
        == 2  # unknown -> closed, then half_open -> closed
    )
    assert value(later, "brama_sql_trips_total", identifier="db", scope="") == 1

    for identifier, scope in (("api", "shop"), ("db", None)):
        verify(brama.engine, identifier, scope)

    only_shop = scrape(brama, scope="shop")
    assert {dict(labels).get("scope") for _, labels in only_shop if labels} == {"shop"}
    unscoped = scrape(brama, scope=None)
    assert {dict(labels).get("scope") for _, labels in unscoped if labels} == {""}


def test_a_scrape_never_reads_the_log(make_brama: Callable[..., Brama]) -> None:
    brama = make_brama(failure_threshold=1)
    brama.register("svc")
    for _ in range(5):
        brama.success("svc")
    brama.failure("svc")
    collector = BramaCollector(brama)
    registry = CollectorRegistry()
    registry.register(collector)  # describes without reading
    statements: list[str] = []

    def capture(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(brama.engine, "before_cursor_execute", capture)
    list(collector.collect())
    event.remove(brama.engine, "before_cursor_execute", capture)
    # connections() reads each row's tail (bounded by FOLD_GAP, see test_metrics.py); nothing
    # else touches the log: the counters come from the rows.
    on_log = [sql for sql in statements if "brama_events" in sql and "through" not in sql]
    assert not on_log, on_log


def test_up_is_zero_when_the_database_is_away(tmp_path: Path) -> None:
    brama = Brama(f"sqlite:///{tmp_path / 'missing' / 'brama.db'}", io_timeout=1, lock_timeout=0.1)
    try:
        samples = scrape(brama)
    finally:
        brama.dispose()
    assert samples == {("brama_sql_up", ()): 0}


def test_a_bad_scope_is_refused(brama: Brama) -> None:
    with pytest.raises(ValueError, match="scope"):
        BramaCollector(brama, scope="")
