"""Random sequences of reports, manual actions, forced states, configure() and prune(),
with verify() after every step."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import pytest

from brama_sql import Brama, BramaError
from brama_sql.replay import verify

T = datetime(2031, 5, 6, 7, 8, 10, tzinfo=timezone.utc)


class Clock:
    def __init__(self) -> None:
        self.now = T

    def __call__(self) -> datetime:
        return self.now


CONFIGS: list[dict[str, object]] = [
    {"failure_rate_threshold": 0.5},
    {"failure_rate_threshold": None},
    {"failure_rate_threshold": 0.3, "minimum_calls": 3},
    {"minimum_calls": 6},
    {"window": 5},
    {"window": 20},
    {"slow_call_duration": 0.5, "slow_call_rate_threshold": 0.5},
    {"slow_call_rate_threshold": None},
    {"slow_call_duration": 1.5},
    {"expiry_strategy": "exponential"},
    {"expiry_strategy": "fixed"},
    {"expiry": 3},
    {"expiry": 8},
    {"max_expiry": 20},
    {"max_expiry": None},
    {"backoff_factor": 3},
    {"failure_threshold": 2},
    {"failure_threshold": 6},
    {"half_open_max_calls": 1},
    {"half_open_max_calls": None},
]


SEEDS = [
    pytest.param(dialect, seed, id=f"{dialect}-{seed}")
    for dialect in ("sqlite", "postgresql", "mysql")
    for seed in range(12 if dialect == "sqlite" else 4)
]
"""Twelve histories on SQLite, four on each server (keeping the server runs short)."""


@pytest.mark.parametrize("fast", [False, True])
@pytest.mark.parametrize(("dialect", "seed"), SEEDS, indirect=["dialect"])
def test_random_histories_stay_explained(
    make_brama: Callable[..., Brama], seed: int, dialect: str, fast: bool
) -> None:
    rng = random.Random(seed)
    clock = Clock()
    brama = make_brama(
        clock=clock, **({"batch_reports": 3600, "availability_cache": 3} if fast else {})
    )
    other_clock = Clock()
    other = make_brama(clock=other_clock)
    brama.register(
        "svc", failure_threshold=4, expiry=5, failure_rate_threshold=0.5, minimum_calls=4, window=10
    )
    trail: list[str] = []
    for step in range(150):
        op = rng.choice(
            ["s"] * 8
            + ["f"] * 5
            + ["open", "close", "reset", "disable", "force_open"]
            + ["conf"] * 2
            + ["tick"] * 4
            + ["prune", "other", "avail", "avail"]
        )
        who = brama
        if op == "other":
            who = other
            other_clock.now = clock.now
            op = rng.choice(["s", "f"])
        trail.append(op)
        try:
            if op == "s":
                who.success("svc", duration=rng.choice([None, 0.1, 1.0, 2.0]))
            elif op == "f":
                who.failure("svc", duration=rng.choice([None, 0.1, 2.0]))
            elif op in ("open", "close", "reset", "disable", "force_open"):
                getattr(brama, op)("svc")
            elif op == "conf":
                options = rng.choice(CONFIGS)
                trail.append(repr(options))
                try:
                    brama.configure("svc", **options)
                except BramaError as error:
                    trail.append(f"refused {error}")
            elif op == "avail":
                brama.available("svc")
            elif op == "tick":
                clock.now += timedelta(seconds=rng.choice([0.3, 1, 2.5, 6, 11]))
            elif op == "prune":
                brama.prune(30)
            if rng.random() < 0.3:
                brama.flush()
                verify(brama.engine, "svc")
        except Exception as error:
            raise AssertionError(f"step {step}: {trail[-12:]}: {error}") from error
