"""Code that runs in the processes of the fault tests (a module of its own so that spawned
processes can import it)."""

from __future__ import annotations

from typing import Any

from brama_sql import Brama, BramaDatabaseError, ReportOutcomeUnknownError


def report_through_kills(url: str, number: int, count: int, results: Any) -> None:
    """Report ``count`` failures, each with a reason of its own, while sessions are killed;
    send back which returned, which raised and which ended with their outcome unknown."""
    brama = Brama(url, lock_timeout=2, io_timeout=1)
    outcome: dict[str, list[str]] = {"returned": [], "raised": [], "unknown": []}
    for index in range(count):
        reason = f"worker {number} report {index}"
        try:
            brama.failure("svc", reason=reason)
        except ReportOutcomeUnknownError:
            outcome["unknown"].append(reason)
        except BramaDatabaseError:
            outcome["raised"].append(reason)
        else:
            outcome["returned"].append(reason)
    results.put(outcome)
    brama.dispose()
