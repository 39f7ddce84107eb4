"""How long the status page takes with 1,000 connections and 1,000,000 events, beside the same
fleet with 1,000 events: ``status_page_html()`` and ``status_page_data()``, median of rounds.

    python -m bench.status_page [--dialects sqlite,postgresql,mysql] [--events 1000000]
        [--placement spread|window]

The fleet: 1,000 connections (rows copied from one registered through the API), 100 of them
opened by hand 2 h ago and closed 1 h ago through the API (so they have transitions in the
window), and ``--events`` healthy successes inserted in bulk by SQL, the same number per
connection, with the rows' tallies set as brama_sql's own writes keep them and the tables'
statistics updated (``ANALYZE``) as a live database's are. ``spread`` places
the events over the 30 days before the window (the log of a fleet that prunes monthly);
``window`` places all of them inside the last 24 hours (the worst case for the page's read).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import bindparam, create_engine, func, insert, select, text
from sqlalchemy.engine import URL, make_url

from brama_sql import Brama
from brama_sql.schema import connections
from brama_sql.schema import events as log
from brama_sql.status_page import status_page_data, status_page_html
from brama_sql.types import UTCDateTime

SERVERS = {
    "postgresql": "postgresql+psycopg://postgres@127.0.0.1:5432/test",
    "mysql": "mysql+pymysql://root@127.0.0.1:3306/test",
}
CONNECTIONS = 1_000
CHANGED = 100
ROUNDS = 5
NOW = datetime(2031, 6, 1, 12, 0, tzinfo=timezone.utc)


def _series(dialect: str, count: int) -> str:
    return {
        "postgresql": f"SELECT g AS n FROM generate_series(1, {count}) g",
        "mysql": f"SELECT seq AS n FROM seq_1_to_{count}",
        "sqlite": "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s "
        f"WHERE n < {count}) SELECT n FROM s",
    }[dialect]


def _seed(url: URL, events: int, placement: str) -> None:
    moment = [NOW - timedelta(days=40)]
    brama = Brama(url, clock=lambda: moment[0])
    brama.migrate()
    brama.register("template")
    engine = create_engine(url)
    dialect = engine.dialect.name
    per_connection = max(1, events // CONNECTIONS)
    names = [f"svc-{number:04d}" for number in range(CONNECTIONS)]
    with engine.begin() as conn:
        row = dict(conn.execute(select(connections)).one()._mapping)
        del row["id"]
        conn.execute(connections.delete())
        conn.execute(insert(connections), [{**row, "identifier": name} for name in names])
        at = NOW - timedelta(hours=1) if placement == "window" else NOW - timedelta(days=20)
        conn.execute(
            text(
                "INSERT INTO brama_events (connection_id, identifier, scope, kind, occurred_at, "
                "failure_count, probe, actor) SELECT c.id, c.identifier, c.scope, 'success', "
                f":at, 0, :probe, 'bench' FROM brama_connections c CROSS JOIN "
                f"({_series(dialect, per_connection)}) s"
            ).bindparams(bindparam("at", type_=UTCDateTime())),
            {"at": at, "probe": False},
        )
        newest = conn.execute(select(func.max(log.c.id))).scalar_one()
        conn.execute(connections.update().values(successes=per_connection, tallied_through=newest))
    analyze = {
        "postgresql": "ANALYZE",
        "mysql": "ANALYZE TABLE brama_events, brama_connections",
        "sqlite": "ANALYZE",
    }[dialect]
    with engine.connect() as conn:  # a live database's statistics know the log's size
        conn.execute(text(analyze))
        conn.commit()
    engine.dispose()
    moment[0] = NOW - timedelta(hours=2)
    for name in names[:: CONNECTIONS // CHANGED]:
        brama.open(name)
    moment[0] = NOW - timedelta(hours=1)
    for name in names[:: CONNECTIONS // CHANGED]:
        brama.close(name)
    brama.dispose()


def _median_s(call: Callable[[], object]) -> float:
    call()
    times = []
    for _ in range(ROUNDS):
        began = time.perf_counter()
        call()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def _measure(url: URL) -> dict[str, float]:
    brama = Brama(url, clock=lambda: NOW)
    try:
        return {
            "html_s": _median_s(lambda: status_page_html(brama)),
            "json_s": _median_s(lambda: json.dumps(status_page_data(brama))),
            "html_bytes": len(status_page_html(brama).encode()),
        }
    finally:
        brama.dispose()


def run(dialect: str, events: int, placement: str, workdir: Path) -> dict[str, Any]:
    """Measure one database with a small and a large log (created and dropped here)."""
    result = {}
    for label, count in (("small", CONNECTIONS), ("large", events)):
        if dialect == "sqlite":
            url = make_url(f"sqlite:///{workdir / f'page-{uuid.uuid4().hex[:8]}.db'}")
            admin = None
        else:
            admin = create_engine(SERVERS[dialect], isolation_level="AUTOCOMMIT")
            name = f"brama_page_{uuid.uuid4().hex[:8]}"
            with admin.connect() as conn:
                conn.execute(text(f"CREATE DATABASE {name}"))
            url = make_url(SERVERS[dialect]).set(database=name)
        try:
            print(f"status_page: {dialect}: seeding {count:,} events", file=sys.stderr)
            _seed(url, count, placement)
            result[label] = _measure(url)
        finally:
            if admin is not None:
                with admin.connect() as conn:
                    force = " WITH (FORCE)" if dialect == "postgresql" else ""
                    conn.execute(text(f"DROP DATABASE IF EXISTS {url.database}{force}"))
                admin.dispose()
    result["html_ratio"] = result["large"]["html_s"] / result["small"]["html_s"]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.status_page", description=__doc__)
    parser.add_argument("--dialects", default="sqlite,postgresql,mysql")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--placement", choices=["spread", "window"], default="spread")
    args = parser.parse_args(argv)
    results = {}
    with tempfile.TemporaryDirectory() as workdir:
        for dialect in args.dialects.split(","):
            results[dialect] = run(dialect, args.events, args.placement, Path(workdir))
    document = {
        "connections": CONNECTIONS,
        "events": args.events,
        "placement": args.placement,
        "results": results,
    }
    print(json.dumps(document, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
