"""Does the failure-rate policy cost more per report? ``success()`` and ``failure()`` of a
connection with the failure-rate policy on beside one without, each with 1,000,000 events
logged, on each database, alternating in rounds like the other benchmarks; the result is the
ratio of the times (policy on / off), which issue #9 wants at most 1.3.

    python -m bench.policies [--dialects sqlite,postgresql,mysql] [--events 1000000] [--short]

The logs are seeded as ``bench.growth`` seeds them. The policy is on with a window of 60 s and
``minimum_calls`` so high that it never trips (and ``failure_threshold`` as high on both), so
every report is counted and decided without changing the state. Successes are measured first
(the window holds no failure, so a success takes the shared-lock path on both), then failures
(each a row-locked write on both). Each database is created and dropped by the run.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from bench import growth
from brama_sql import Brama

NEVER = 2**31 - 1
SCOPE = "policies"


def run(dialect: str, events: int, workdir: Path) -> dict[str, Any]:
    """Measure one database (created and dropped here)."""
    if dialect == "sqlite":
        url = make_url(f"sqlite:///{workdir / f'policies-{uuid.uuid4().hex[:8]}.db'}")
        admin = None
    else:
        admin = create_engine(growth.SERVERS[dialect], isolation_level="AUTOCOMMIT")
        name = f"brama_policies_{uuid.uuid4().hex[:8]}"
        with admin.connect() as conn:
            conn.execute(text(f"CREATE DATABASE {name}"))
        url = make_url(growth.SERVERS[dialect]).set(database=name)
    try:
        brama = Brama(url)
        brama.migrate()
        print(f"policies: {dialect}: seeding 2 x {events:,} events", file=sys.stderr)
        for name in ("plain", "rated"):
            growth._fill(url, name, events, SCOPE)
        brama.configure("plain", scope=SCOPE, failure_threshold=NEVER)
        brama.configure(
            "rated",
            scope=SCOPE,
            failure_threshold=NEVER,
            failure_rate_threshold=0.5,
            window=60,
            minimum_calls=NEVER,
        )
        result = {
            "success": _off_on(
                growth._compare(
                    lambda: brama.success("plain", scope=SCOPE),
                    lambda: brama.success("rated", scope=SCOPE),
                )
            ),
            "failure": _off_on(
                growth._compare(
                    lambda: brama.failure("plain", scope=SCOPE),
                    lambda: brama.failure("rated", scope=SCOPE),
                )
            ),
        }
        brama.dispose()
        return result
    finally:
        if admin is not None:
            with admin.connect() as conn:
                force = " WITH (FORCE)" if dialect == "postgresql" else ""
                conn.execute(text(f"DROP DATABASE IF EXISTS {url.database}{force}"))
            admin.dispose()


def _off_on(figures: dict[str, float]) -> dict[str, float]:
    """``growth._compare``'s figures named for this comparison: the policy off (the first
    contender) and on; ``time_ratio`` is the median of the rounds' on/off time ratios, so it
    need not equal the ratio of the two median rates."""
    return {
        "off_ops_per_s": figures["small_ops_per_s"],
        "on_ops_per_s": figures["large_ops_per_s"],
        "time_ratio": figures["time_ratio"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.policies", description=__doc__)
    parser.add_argument("--dialects", default="sqlite,postgresql,mysql")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument(
        "--short", action="store_true", help="A smoke run: 2,000 events, short rounds."
    )
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.short:
        args.events = 2_000
        growth.ROUNDS, growth.ROUND_S = 2, 0.05
    results = {}
    with tempfile.TemporaryDirectory() as workdir:
        for dialect in args.dialects.split(","):
            results[dialect] = run(dialect, args.events, Path(workdir))
            for report, figures in results[dialect].items():
                print(
                    f"policies: {dialect} {report}(): off {figures['off_ops_per_s']:,.0f}/s, "
                    f"on {figures['on_ops_per_s']:,.0f}/s, "
                    f"time on/off {figures['time_ratio']:.2f}",
                    file=sys.stderr,
                )
    document = {
        "events": args.events,
        "mode": "short" if args.short else "full",
        "policy": {"failure_rate_threshold": 0.5, "window": 60, "minimum_calls": NEVER},
        "results": results,
    }
    if args.output is not None:
        args.output.write_text(json.dumps(document, indent=2) + "\n")
    print(json.dumps(document, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
