"""Does a Prometheus scrape grow with the log? :class:`BramaCollector` scraping 10 connections
whose logs hold about 1,000 events in all, beside 10 whose logs hold about 100,000 and about
1,000,000 (one large log and nine of 100 events), on each database, in alternating rounds like
:mod:`bench.growth`; the result is the ratio of the times (large / small), which issue #10
wants at most 1.5.

    python -m bench.scrape [--dialects sqlite,postgresql,mysql] [--sizes 100000,1000000]

Each side is a database of its own (created and dropped by the run), filled by
:func:`bench.growth._fill` (healthy successes in bulk, tallies as brama_sql keeps them, an
equal unfolded tail on every connection). Each collector is scraped once before timing, so
the timed scrapes are steady state: nothing new in the log since the previous one.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url

from bench.growth import SERVERS, _compare, _fill
from brama_sql import Brama
from brama_sql.contrib.prometheus import BramaCollector

SMALL = 1_000
CONNECTIONS = 10


@contextmanager
def _database(dialect: str, workdir: Path) -> Iterator[URL]:
    """A new migrated database, dropped afterwards."""
    if dialect == "sqlite":
        yield make_url(f"sqlite:///{workdir / f'scrape-{uuid.uuid4().hex[:8]}.db'}")
        return
    admin = create_engine(SERVERS[dialect], isolation_level="AUTOCOMMIT")
    name = f"brama_scrape_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    try:
        yield make_url(SERVERS[dialect]).set(database=name)
    finally:
        with admin.connect() as conn:
            force = " WITH (FORCE)" if dialect == "postgresql" else ""
            conn.execute(text(f"DROP DATABASE IF EXISTS {name}{force}"))
        admin.dispose()


def _seed(url: URL, events: int) -> Brama:
    """Migrate ``url`` and give it 10 connections: one with ``events - 900`` events, nine of
    100; a Brama on it."""
    brama = Brama(url)
    brama.migrate()
    _fill(url, "large", max(100, events - 100 * (CONNECTIONS - 1)), "scrape")
    for index in range(CONNECTIONS - 1):
        _fill(url, f"small-{index}", 100, "scrape")
    return brama


def run(dialect: str, sizes: list[int], workdir: Path) -> dict[str, Any]:
    """Measure one dialect: the small side against each size."""
    results: dict[str, Any] = {}
    with _database(dialect, workdir) as small_url:
        small = _seed(small_url, SMALL)
        small_collector = BramaCollector(small)
        list(small_collector.collect())
        for size in sizes:
            with _database(dialect, workdir) as large_url:
                print(f"scrape: {dialect}: seeding {size:,} events", file=sys.stderr)
                large = _seed(large_url, size)
                large_collector = BramaCollector(large)
                list(large_collector.collect())
                results[str(size)] = _compare(
                    lambda: list(small_collector.collect()),
                    lambda collector=large_collector: list(collector.collect()),  # type: ignore[misc]
                )
                large.dispose()
        small.dispose()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scrape", description=__doc__)
    parser.add_argument("--dialects", default="sqlite,postgresql,mysql")
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    sizes = [int(size) for size in args.sizes.split(",")]
    results = {}
    with tempfile.TemporaryDirectory() as workdir:
        for dialect in args.dialects.split(","):
            results[dialect] = run(dialect, sizes, Path(workdir))
            for size, figures in results[dialect].items():
                print(
                    f"scrape: {dialect} {SMALL:,} vs {int(size):,} events: "
                    f"small {figures['small_ops_per_s']:,.0f}/s, "
                    f"large {figures['large_ops_per_s']:,.0f}/s, "
                    f"time large/small {figures['time_ratio']:.2f}",
                    file=sys.stderr,
                )
    document = {"small_events": SMALL, "connections": CONNECTIONS, "results": results}
    if args.output is not None:
        args.output.write_text(json.dumps(document, indent=2) + "\n")
    print(json.dumps(document, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
