"""Do reads grow with the log? ``status()`` of a connection with 1,000 events beside one with
1,000,000, and ``connections()`` over 10 connections holding 1,900 events in all beside 10
holding about 1,000,000 (the large one and nine of 1,000), on each database, alternating in
rounds like the main benchmark; the result is the ratio of the times (large log / small log),
which issue #8 wants at most 1.5.

    python -m bench.growth [--dialects sqlite,postgresql,mysql] [--events 1000000]

The logs are healthy successes inserted in bulk by SQL (seconds, not hours), with the rows'
tallies set as brama_sql's own writes keep them; a tail of healthy successes not folded yet
(``TAIL`` events, equal on every connection: brama_sql bounds it by ``FOLD_GAP`` whatever the
log's size) is left on every connection, so that the reads count what they count in
production. Each database is created and dropped by the run.
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
from pathlib import Path
from typing import Any

from sqlalchemy import bindparam, create_engine, select, text
from sqlalchemy.engine import URL, make_url

from brama_sql import Brama
from brama_sql.schema import connections
from brama_sql.schema import events as log
from brama_sql.store import FOLD_GAP
from brama_sql.types import UTCDateTime

SERVERS = {
    "postgresql": "postgresql+psycopg://postgres@127.0.0.1:5432/test",
    "mysql": "mysql+pymysql://root@127.0.0.1:3306/test",
}
TAIL = 97
"""Healthy successes left after ``tallied_through`` on every connection, large log or small
(the most a 100-event log can have): a read counts at most ``FOLD_GAP`` of them whatever the
log's size, so equal tails isolate what the log's size costs."""
ROUNDS = 7
ROUND_S = 0.4
SCOPE = "growth"


def _fill(url: URL, name: str, events: int, scope: str = SCOPE) -> None:
    """Give ``name`` a log of ``events`` healthy successes (registration and first success
    through the API), the row's tallies counting all but the last ``FOLD_GAP`` of them."""
    brama = Brama(url)
    brama.register(name, scope=scope)
    brama.success(name, scope=scope)
    brama.dispose()
    engine = create_engine(url)
    dialect = engine.dialect.name
    more = max(0, events - 3)
    series = {
        "postgresql": f"SELECT g AS n FROM generate_series(1, {more}) g",
        "mysql": f"SELECT seq AS n FROM seq_1_to_{more}",
        "sqlite": "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s "
        f"WHERE n < {more}) SELECT n FROM s",
    }[dialect]
    with engine.begin() as conn:
        template = conn.execute(
            select(log.c.connection_id, log.c.actor, log.c.occurred_at)
            .join(connections, connections.c.id == log.c.connection_id)
            .where(
                connections.c.identifier == name,
                connections.c.scope == scope,
                log.c.kind == "success",
            )
        ).one()
        if more:
            conn.execute(
                text(
                    "INSERT INTO brama_events (connection_id, identifier, scope, kind, "
                    "occurred_at, failure_count, probe, actor) SELECT :cid, :name, :scope, "
                    f"'success', :at, 0, :probe, :actor FROM ({series}) s"
                ).bindparams(bindparam("at", type_=UTCDateTime())),
                {
                    "cid": template.connection_id,
                    "name": name,
                    "scope": scope,
                    "at": template.occurred_at,
                    "probe": False,
                    "actor": template.actor,
                },
            )
        tail = min(TAIL, more)
        conn.execute(
            text(
                "UPDATE brama_connections SET "
                "successes = successes + :folded, "
                "tallied_through = (SELECT MAX(id) FROM brama_events WHERE connection_id = :cid) "
                "- :tail WHERE id = :cid"
            ),
            {"folded": more - tail, "tail": tail, "cid": template.connection_id},
        )
    engine.dispose()


def _rate(call: Callable[[], object]) -> float:
    calls, began = 0, time.perf_counter()
    while True:
        call()
        calls += 1
        elapsed = time.perf_counter() - began
        if elapsed >= ROUND_S:
            return calls / elapsed


def _compare(small: Callable[[], object], large: Callable[[], object]) -> dict[str, Any]:
    """Alternate the two reads in rounds; the median of the per-round time ratios."""
    small(), large()
    ratios, rates = [], {"small": [], "large": []}
    for number in range(ROUNDS):
        order = [("small", small), ("large", large)]
        if number % 2:
            order.reverse()
        found = {key: _rate(call) for key, call in order}
        for key, value in found.items():
            rates[key].append(value)
        ratios.append(found["small"] / found["large"])  # time(large) / time(small)
    return {
        "small_ops_per_s": statistics.median(rates["small"]),
        "large_ops_per_s": statistics.median(rates["large"]),
        "time_ratio": statistics.median(ratios),
    }


def run(dialect: str, events: int, workdir: Path) -> dict[str, Any]:
    """Measure one database (created and dropped here)."""
    if dialect == "sqlite":
        url = make_url(f"sqlite:///{workdir / f'growth-{uuid.uuid4().hex[:8]}.db'}")
        admin = None
    else:
        admin = create_engine(SERVERS[dialect], isolation_level="AUTOCOMMIT")
        name = f"brama_growth_{uuid.uuid4().hex[:8]}"
        with admin.connect() as conn:
            conn.execute(text(f"CREATE DATABASE {name}"))
        url = make_url(SERVERS[dialect]).set(database=name)
    try:
        brama = Brama(url)
        brama.migrate()
        print(f"growth: {dialect}: seeding {events:,} events", file=sys.stderr)
        _fill(url, "small", 1_000, "few")
        _fill(url, "large", events, "many")
        for index in range(9):
            _fill(url, f"few-{index}", 100, "few")
            _fill(url, f"many-{index}", 1_000, "many")
        few = Brama(url)
        result = {
            "status": _compare(
                lambda: brama.status("small", scope="few"),
                lambda: brama.status("large", scope="many"),
            ),
            "connections": _compare(
                lambda: few.connections(scope="few"), lambda: few.connections(scope="many")
            ),
        }
        few.dispose()
        brama.dispose()
        return result
    finally:
        if admin is not None:
            with admin.connect() as conn:
                force = " WITH (FORCE)" if dialect == "postgresql" else ""
                conn.execute(text(f"DROP DATABASE IF EXISTS {url.database}{force}"))
            admin.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.growth", description=__doc__)
    parser.add_argument("--dialects", default="sqlite,postgresql,mysql")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    results = {}
    with tempfile.TemporaryDirectory() as workdir:
        for dialect in args.dialects.split(","):
            results[dialect] = run(dialect, args.events, Path(workdir))
            for read, figures in results[dialect].items():
                print(
                    f"growth: {dialect} {read}: small {figures['small_ops_per_s']:,.0f}/s, "
                    f"large {figures['large_ops_per_s']:,.0f}/s, "
                    f"time large/small {figures['time_ratio']:.2f}",
                    file=sys.stderr,
                )
    document = {"events": args.events, "fold_gap": FOLD_GAP, "results": results}
    if args.output is not None:
        args.output.write_text(json.dumps(document, indent=2) + "\n")
    print(json.dumps(document, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
