"""A huge int for a rate, ``backoff_factor`` or a report's duration is an
``InvalidArgumentError`` (not an ``OverflowError``), and nothing is written."""

from __future__ import annotations

import pytest

from brama_sql import Brama, InvalidArgumentError


@pytest.mark.parametrize(
    "options",
    [
        {"failure_rate_threshold": 10**400},
        {"slow_call_duration": 1, "slow_call_rate_threshold": 10**400},
        {"backoff_factor": 10**400},
    ],
)
def test_huge_policy_numbers_are_invalid_arguments(brama: Brama, options: dict) -> None:
    with pytest.raises(InvalidArgumentError):
        brama.register("svc", **options)


def test_a_huge_duration_is_an_invalid_argument(brama: Brama) -> None:
    brama.register("svc")
    with pytest.raises(InvalidArgumentError):
        brama.success("svc", duration=10**400)
