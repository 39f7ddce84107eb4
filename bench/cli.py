"""``python -m bench``: run the benchmark, write the JSON file and print the tables.

The full run measures every cell of :data:`bench.plan.FULL` on SQLite, PostgreSQL and MariaDB
(about nine minutes on 2 cores); ``--short`` runs the smoke-test plan :data:`bench.plan.SHORT`
in seconds. A server that does not answer is skipped with the reason (Redis: only the pybreaker
contender), unless ``--require-servers`` makes that an error (exit status 2).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy import create_engine
from sqlalchemy.engine import URL

from bench import FORMAT
from bench.contenders import WorkerSpec
from bench.databases import SERVER_URLS, Unavailable, database, server_version
from bench.fleet import HOT_NAME, SCOPE, seed, spread_names
from bench.measure import Cell, measure
from bench.plan import (
    BRAMA,
    CORE,
    DIALECTS,
    DRIVER,
    FAST,
    FULL,
    OPERATIONS,
    PYBREAKER,
    SHORT,
    Plan,
    contenders_of,
)
from bench.report import machine, rate, source, tables, write
from bench.workers import Workers
from brama_sql.replay import verify

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results" / "latest.json"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; the exit status is 0, or 2 when a required server is missing."""
    args = _parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    plan = _plan(args)
    skipped: list[dict[str, str]] = []
    servers: dict[str, str] = {}
    redis_url: str | None = args.redis_url
    try:
        servers["redis"] = _redis_version(args.redis_url)
    except Exception as error:
        reason = f"Redis at {_shown(args.redis_url)} or pybreaker is not usable: {error}"
        if args.require_servers:
            print(f"bench: {reason} (--require-servers)", file=sys.stderr)
            return 2
        print(f"bench: skipping the pybreaker contender: {reason}", file=sys.stderr)
        skipped.append({"what": PYBREAKER, "reason": reason})
        redis_url = None
    contenders = (BRAMA, CORE, DRIVER, FAST, *((PYBREAKER,) if redis_url else ()))
    namespace = f"brama-bench-{uuid.uuid4().hex[:8]}"
    urls = {"postgresql": args.postgres_url, "mysql": args.mysql_url}
    started = time.monotonic()
    document: dict[str, Any] = {
        "format": FORMAT,
        "mode": "short" if args.short else "full",
        "started_at": datetime.now(timezone.utc).isoformat(),
        "machine": machine(),
        "source": source(),
        "load_average_at_start": _load(),
        "plan": dataclasses.asdict(plan),
        "servers": servers,
        "fleets": {},
        "verified_connections": {},
        "skipped": skipped,
        "skipped_dialects": [],
        "results": [],
    }
    try:
        for dialect in plan.dialects:
            try:
                with database(dialect, urls.get(dialect)) as url:
                    servers[dialect] = server_version(url)
                    print(f"bench: {dialect} {servers[dialect]}: seeding", file=sys.stderr)
                    document["fleets"][dialect] = seed(url, plan)
                    spec = WorkerSpec(
                        dialect,
                        url.render_as_string(hide_password=False),
                        plan,
                        contenders,
                        redis_url,
                        namespace,
                    )
                    document["results"] += _run_dialect(spec, plan)
                    document["verified_connections"][dialect] = _verify(url, plan)
            except Unavailable as error:
                if args.require_servers:
                    print(f"bench: {error} (--require-servers)", file=sys.stderr)
                    return 2
                print(f"bench: skipping {dialect}: {error}", file=sys.stderr)
                skipped.append({"what": dialect, "reason": str(error)})
                document["skipped_dialects"].append(dialect)
    finally:
        if redis_url:
            _forget(redis_url, namespace)
    document["duration_s"] = round(time.monotonic() - started, 1)
    document["load_average_at_end"] = _load()
    write(document, args.output)
    print(tables(document))
    print(f"\nbench: {document['duration_s']} s; figures in {args.output}", file=sys.stderr)
    return 0


def _terminate(signum: int, _frame: object) -> None:
    """Stop on SIGTERM as on Ctrl-C: the workers are stopped, the databases dropped."""
    raise SystemExit(128 + signum)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument(
        "--short", action="store_true", help="the smoke test: tiny rounds, 1 process, 100 rows"
    )
    parser.add_argument(
        "--dialects",
        type=_names(DIALECTS),
        default=None,
        help="comma-separated subset of sqlite,postgresql,mysql (default: all three)",
    )
    parser.add_argument(
        "--operations",
        type=_names(OPERATIONS),
        default=None,
        help=f"comma-separated subset of {','.join(OPERATIONS)} (default: all)",
    )
    parser.add_argument("--processes", type=_numbers, help="process counts, e.g. 1,4")
    parser.add_argument("--rounds", type=int, help="rounds per contender and cell")
    parser.add_argument("--seconds", type=float, help="length of a round in seconds")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="the JSON file")
    parser.add_argument("--postgres-url", default=SERVER_URLS["postgresql"])
    parser.add_argument("--mysql-url", default=SERVER_URLS["mysql"])
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    parser.add_argument(
        "--require-servers",
        action="store_true",
        help="fail (exit 2) instead of skipping a server or Redis that does not answer",
    )
    return parser


def _names(allowed: tuple[str, ...]) -> Any:
    def parse(text: str) -> tuple[str, ...]:
        names = tuple(name.strip() for name in text.split(",") if name.strip())
        unknown = [name for name in names if name not in allowed]
        if unknown or not names:
            raise argparse.ArgumentTypeError(f"choose from {','.join(allowed)}")
        return names

    return parse


def _numbers(text: str) -> tuple[int, ...]:
    try:
        numbers = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError("a comma-separated list of whole numbers") from None
    if not numbers or min(numbers) < 1:
        raise argparse.ArgumentTypeError("process counts are at least 1")
    return numbers


def _plan(args: argparse.Namespace) -> Plan:
    plan = SHORT if args.short else FULL
    changes: dict[str, Any] = {}
    if args.dialects:
        changes["dialects"] = args.dialects
    if args.operations:
        changes["operations"] = args.operations
    if args.processes:
        changes["processes"] = args.processes
    if args.rounds:
        changes["rounds"] = args.rounds
    if args.seconds:
        changes["round_seconds"] = args.seconds
    return dataclasses.replace(plan, **changes)


def _run_dialect(spec: WorkerSpec, plan: Plan) -> list[dict[str, Any]]:
    """Measure every cell on one database, with one pool of workers per process count."""
    pools: dict[int, Workers] = {}
    results = []
    try:
        for count in plan.processes:
            pools[count] = Workers(count, spec)
        for operation, layout, processes in plan.cells():
            cell = Cell(spec.dialect, operation, layout, processes)
            chosen = tuple(name for name in contenders_of(operation) if name in spec.contenders)
            result = measure(pools[processes], plan, cell, chosen)
            results.append(result)
            _progress(result)
    finally:
        for pool in pools.values():
            pool.close()
    return results


def _progress(result: dict[str, Any]) -> None:
    rates = ", ".join(
        f"{name} {rate(figures['median_ops_per_s'])}/s"
        for name, figures in result["contenders"].items()
    )
    ratios = ", ".join(f"{name} {value:.2f}" for name, value in result["ratios"].items())
    print(
        f"bench: {result['dialect']} {result['operation']} {result['layout']} "
        f"x{result['processes']}: {rates}; {ratios}",
        file=sys.stderr,
    )


def _verify(url: URL, plan: Plan) -> int:
    """Replay the log of every connection the run wrote to and compare it with the row
    (``brama_sql.replay.verify``): the twins must have written what brama_sql would have."""
    engine = create_engine(url)
    try:
        names = [HOT_NAME, *spread_names(plan)]
        for name in names:
            verify(engine, name, SCOPE)
        return len(names)
    finally:
        engine.dispose()


def _redis_version(redis_url: str) -> str:
    """Redis's version, after checking that pybreaker and the Redis client are installed."""
    import pybreaker  # noqa: F401 - the contender needs it
    import redis

    client = redis.Redis.from_url(redis_url, socket_connect_timeout=2, socket_timeout=5)
    try:
        info: dict[str, Any] = client.info("server")
        return str(info["redis_version"])
    finally:
        client.close()


def _load() -> list[float] | None:
    """The system's 1, 5 and 15 minute load averages: other work on the machine skews the
    figures (the ratios less, as contenders alternate)."""
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return None


def _shown(redis_url: str) -> str:
    """A Redis URL for a message, its password hidden."""
    parts = urlsplit(redis_url)
    if parts.password is None:
        return redis_url
    host = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def _forget(redis_url: str, namespace: str) -> None:
    """Delete the run's pybreaker keys from Redis."""
    import redis

    client = redis.Redis.from_url(redis_url, socket_connect_timeout=2, socket_timeout=5)
    try:
        keys = list(client.scan_iter(match=f"{namespace}:*", count=1000))
        if keys:
            client.delete(*keys)
    except redis.RedisError as error:
        print(f"bench: could not delete the run's Redis keys: {error}", file=sys.stderr)
    finally:
        client.close()
