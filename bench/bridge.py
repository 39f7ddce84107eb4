"""What the greenlet bridge of ``AsyncBrama`` costs: the same calls through ``Brama`` and through
``AsyncBrama`` (awaited one after another in one task), side by side on each database, in one run.

    python -m bench.bridge [--calls 200] [--rounds 3] [--dialects sqlite postgresql mysql]

Each round times ``--calls`` calls of each operation in each mode, the modes alternating; the
table shows the median over the rounds of the mean time per call (microseconds) and the ratio
async / sync. ``bridge only`` is an awaited call of a function doing nothing through the
bridge (``greenlet_spawn`` in a shielded task of its own): the fixed cost the bridge adds.
``SELECT 1`` is a pooled connection's round trip through SQLAlchemy alone (``Engine`` against
``AsyncEngine``, no brama_sql): what the asyncio driver itself costs beside the synchronous one.
``50 tasks`` runs the ``success()`` calls as 50 concurrent tasks (calls per second), against
the sync calls one after another in one thread.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable

from sqlalchemy import text

from bench.databases import Unavailable, database
from brama_sql import AsyncBrama, Brama, bridge

ASYNC_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+psycopg",
    "mysql": "mysql+aiomysql",
}


def timed(call: Callable[[], object], calls: int) -> float:
    """Mean seconds per call of ``call``."""
    started = time.perf_counter()
    for _ in range(calls):
        call()
    return (time.perf_counter() - started) / calls


async def timed_async(call: Callable[[], Awaitable[object]], calls: int) -> float:
    """Mean seconds per awaited call of ``call``."""
    started = time.perf_counter()
    for _ in range(calls):
        await call()
    return (time.perf_counter() - started) / calls


def guarded(brama: Brama) -> None:
    with brama.guard("svc"):
        pass


async def guarded_async(brama: AsyncBrama) -> None:
    async with brama.guard("svc"):
        pass


def select_one(brama: Brama) -> None:
    with brama.engine.connect() as conn:
        conn.execute(text("SELECT 1"))


async def select_one_async(brama: AsyncBrama) -> None:
    async with brama.engine.connect() as conn:
        await conn.execute(text("SELECT 1"))


def nothing() -> None:
    return None


async def measure(dialect: str, calls: int, rounds: int) -> list[tuple[str, float, float]]:
    """(operation, sync, async) figures for one database."""
    with database(dialect) as url:
        sync = Brama(url.render_as_string(hide_password=False))
        sync.migrate()
        sync.register("svc", failure_threshold=1_000_000)
        asynchronous = AsyncBrama(
            url.set(drivername=ASYNC_DRIVERS[dialect]).render_as_string(hide_password=False)
        )
        operations: list[tuple[str, Callable[[], object], Callable[[], Awaitable[object]]]] = [
            ("available()", lambda: sync.available("svc"), lambda: asynchronous.available("svc")),
            ("success()", lambda: sync.success("svc"), lambda: asynchronous.success("svc")),
            ("status()", lambda: sync.status("svc"), lambda: asynchronous.status("svc")),
            ("guard block", lambda: guarded(sync), lambda: guarded_async(asynchronous)),
            ("bridge only", nothing, lambda: bridge.run(nothing)),
            ("SELECT 1", lambda: select_one(sync), lambda: select_one_async(asynchronous)),
        ]
        figures: dict[str, tuple[list[float], list[float]]] = {
            name: ([], []) for name, _, _ in operations
        }
        figures["50 tasks"] = ([], [])
        await timed_async(lambda: asynchronous.available("svc"), 20)  # connect, warm up
        timed(lambda: sync.available("svc"), 20)
        for _ in range(rounds):
            for name, plain, awaited in operations:
                figures[name][0].append(timed(plain, calls))
                figures[name][1].append(await timed_async(awaited, calls))
            started = time.perf_counter()
            for _ in range(calls):
                sync.success("svc")
            figures["50 tasks"][0].append(calls / (time.perf_counter() - started))
            started = time.perf_counter()
            await concurrently(asynchronous, calls, 50)
            figures["50 tasks"][1].append(calls / (time.perf_counter() - started))
        await asynchronous.dispose()
        sync.dispose()
    return [
        (name, statistics.median(plain), statistics.median(awaited))
        for name, (plain, awaited) in figures.items()
    ]


async def concurrently(brama: AsyncBrama, calls: int, tasks: int) -> None:
    """``calls`` success reports made by ``tasks`` concurrent tasks."""

    async def worker(share: int) -> None:
        for _ in range(share):
            await brama.success("svc")

    shares = [calls // tasks + (1 if n < calls % tasks else 0) for n in range(tasks)]
    await asyncio.gather(*(worker(share) for share in shares))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bridge", description=__doc__)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dialects", nargs="+", default=list(ASYNC_DRIVERS))
    options = parser.parse_args(argv)
    print("| database | operation | Brama | AsyncBrama | async / sync |")
    print("|---|---|---:|---:|---:|")
    for dialect in options.dialects:
        try:
            rows = asyncio.run(measure(dialect, options.calls, options.rounds))
        except Unavailable as error:
            print(f"| {dialect} | skipped: {error} | | | |")
            continue
        for name, plain, awaited in rows:
            if name == "50 tasks":
                print(
                    f"| {dialect} | success(), 50 tasks (calls/s) | {plain:,.0f} (1 thread) "
                    f"| {awaited:,.0f} | {awaited / plain:.2f} |"
                )
            elif name == "bridge only":
                print(f"| {dialect} | {name} (µs/call) | — | {awaited * 1e6:,.0f} | — |")
            else:
                print(
                    f"| {dialect} | {name} (µs/call) | {plain * 1e6:,.0f} | {awaited * 1e6:,.0f} "
                    f"| {awaited / plain:.2f} |"
                )
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
