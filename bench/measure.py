"""Measuring one cell: its contenders alternate in short rounds, and the result is each one's
median rate and the median of brama_sql's per-round ratio to each other contender.

Every contender gets one unrecorded warm-up (statement caches, prepared statements, pools),
then ``rounds`` rounds; round ``r`` starts with contender ``r mod n`` so that none always runs
first or right after the same one. A round's rate is the sum over the processes of each one's
calls divided by its own elapsed time. A ratio is taken within each round (brama_sql's rate over
the other's, measured seconds apart) and the median of those is reported, which keeps a drift
of the machine over the run out of it.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

from bench.plan import BRAMA, FAST, PYBREAKER, Plan
from bench.workers import Task, Workers


@dataclass(frozen=True)
class Cell:
    """One operation on one dialect, from a number of processes, in a layout."""

    dialect: str
    operation: str
    layout: str
    processes: int


def measure(
    workers: Workers, plan: Plan, cell: Cell, contenders: tuple[str, ...]
) -> dict[str, Any]:
    """Run the rounds of ``cell`` and return its figures (see :mod:`bench.report`)."""
    for name in contenders:
        workers.run(Task(name, cell.operation, cell.layout, plan.warmup_seconds))
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    calls: dict[str, int] = dict.fromkeys(contenders, 0)
    for number in range(plan.rounds):
        shift = number % len(contenders)
        for name in contenders[shift:] + contenders[:shift]:
            samples = workers.run(Task(name, cell.operation, cell.layout, plan.round_seconds))
            rates[name].append(sum(sample.rate for sample in samples))
            calls[name] += sum(sample.calls for sample in samples)
    figures: dict[str, Any] = {
        name: {
            "median_ops_per_s": statistics.median(rates[name]),
            "rounds_ops_per_s": rates[name],
            "calls": calls[name],
        }
        for name in contenders
    }
    ratios = {
        f"{BRAMA}/{name}": statistics.median(
            mine / theirs for mine, theirs in zip(rates[BRAMA], rates[name], strict=True)
        )
        for name in contenders
        if name != BRAMA
    }
    if FAST in rates and PYBREAKER in rates:
        ratios[f"{FAST}/{PYBREAKER}"] = statistics.median(
            mine / theirs for mine, theirs in zip(rates[FAST], rates[PYBREAKER], strict=True)
        )
    return {
        "dialect": cell.dialect,
        "operation": cell.operation,
        "layout": cell.layout,
        "processes": cell.processes,
        "contenders": figures,
        "ratios": ratios,
    }
