"""Transitions by cause (revision 0006): the row's ``transitions`` tally counts every transition
by cause and target state, whatever caused it; the Prometheus counters read it, so every process
reports the same exact counts; a prune keeps them (the checkpoint carries the tally) and
``verify`` catches a tampered tally. On every dialect."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import pytest
from freezegun import freeze_time
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select, update

from brama_sql import Brama
from brama_sql.contrib.prometheus import BramaCollector
from brama_sql.replay import ReplayError, verify
from brama_sql.schema import connections
from brama_sql.tallies import transition_counts

START = datetime(2031, 6, 1, 8, 0, tzinfo=timezone.utc)
Counts = dict[tuple[str, str, str], float]
"""(identifier, cause, to_state) -> brama_sql_transitions_total."""


def transitions(brama: Brama) -> Counts:
    """The transition counters of one scrape by a fresh collector of ``brama``."""
    registry = CollectorRegistry()
    registry.register(BramaCollector(brama))
    return {
        (sample.labels["identifier"], sample.labels["cause"], sample.labels["to_state"]): (
            sample.value
        )
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for sample in family.samples
        if sample.name == "brama_sql_transitions_total"
    }


def stored(brama: Brama, identifier: str) -> dict[str, int]:
    """The row's ``transitions`` tally as stored."""
    with brama.engine.connect() as conn:
        document = conn.execute(
            select(connections.c.transitions).where(connections.c.identifier == identifier)
        ).scalar_one()
    return transition_counts(document)


def every_cause(brama: Brama, clock: Any) -> None:
    """Transitions of every cause on ``svc`` (threshold 2, expiry 60 s)."""
    brama.register("svc", failure_threshold=2, expiry=60)
    brama.failure("svc")  # report: unknown -> closed
    brama.failure("svc")  # report: closed -> open
    clock.tick(61)
    brama.success("svc")  # expiry: open -> half_open, report: half_open -> closed
    brama.open("svc")  # manual_open -> open
    brama.close("svc")  # manual_close -> closed
    brama.failure("svc")
    brama.reset("svc")  # manual_reset -> closed (the failure count goes)
    brama.disable("svc")  # disable -> disabled
    brama.reset("svc")  # manual_reset -> closed
    brama.force_open("svc")  # force_open -> forced_open
    brama.close("svc")  # manual_close -> closed
    brama.configure("svc", failure_threshold=5)
    brama.failure("svc")
    brama.failure("svc")
    brama.configure("svc", failure_threshold=2)  # configured: closed -> open


EVERY_CAUSE = {
    ("svc", "report", "closed"): 2,
    ("svc", "report", "open"): 1,
    ("svc", "expiry", "half_open"): 1,
    ("svc", "manual_open", "open"): 1,
    ("svc", "manual_close", "closed"): 2,
    ("svc", "manual_reset", "closed"): 2,
    ("svc", "disable", "disabled"): 1,
    ("svc", "force_open", "forced_open"): 1,
    ("svc", "configured", "open"): 1,
}


def test_every_cause_is_counted_exactly_and_alike_from_two_processes(
    make_brama: Callable[..., Brama],
) -> None:
    one, other = make_brama(), make_brama()  # two "processes" on one database
    with freeze_time(START) as clock:
        every_cause(one, clock)
        assert transitions(one) == transitions(other) == EVERY_CAUSE
        other.close("svc")  # the other process writes too
        other.register("db")
        other.failure("db")
        one.failure("db")
        expected = {
            **EVERY_CAUSE,
            ("svc", "manual_close", "closed"): 3,
            ("db", "report", "closed"): 1,
        }
        assert transitions(one) == transitions(other) == expected
    assert stored(one, "svc") == {
        f"{cause}:{to_state}": count
        for (identifier, cause, to_state), count in expected.items()
        if identifier == "svc"
    }
    verify(one.engine, "svc")
    verify(one.engine, "db")


def test_a_new_registration_counts_afresh(brama: Brama) -> None:
    brama.register("svc", failure_threshold=1)
    brama.failure("svc")
    brama.unregister("svc")
    brama.register("svc")
    brama.success("svc")
    assert transitions(brama) == {("svc", "report", "closed"): 1}
    verify(brama.engine, "svc")


def test_prune_keeps_the_counts_and_verify_goes_on(make_brama: Callable[..., Brama]) -> None:
    brama = make_brama()
    with freeze_time(START) as clock:
        every_cause(brama, clock)
        clock.tick(3600 * 2)
        brama.failure("svc")  # expiry: open -> half_open, report: half_open -> open
        before = transitions(brama)
        assert before == {
            **EVERY_CAUSE,
            ("svc", "expiry", "half_open"): 2,
            ("svc", "report", "open"): 2,
        }
        assert brama.prune(3600) > 0
        assert transitions(brama) == before
        verify(brama.engine, "svc")
        brama.close("svc")
        assert transitions(brama)[("svc", "manual_close", "closed")] == 3
    verify(brama.engine, "svc")


@pytest.mark.parametrize(
    "tampered",
    [{"report:closed": 2}, {"report:closed": 1, "report:open": 1}, None],
)
def test_verify_catches_a_tampered_tally(brama: Brama, tampered: dict[str, int] | None) -> None:
    brama.register("svc", failure_threshold=1)
    brama.success("svc")
    verify(brama.engine, "svc")
    with brama.engine.begin() as conn:
        conn.execute(
            update(connections)
            .where(connections.c.identifier == "svc")
            .values(transitions=tampered)
        )
    with pytest.raises(ReplayError, match="tallies"):
        verify(brama.engine, "svc")


def test_the_healthy_success_fast_path_leaves_the_tally_alone(brama: Brama) -> None:
    brama.register("svc")
    brama.success("svc")
    for _ in range(5):
        brama.success("svc")
    assert stored(brama, "svc") == {"report:closed": 1}
    assert transitions(brama) == {("svc", "report", "closed"): 1}
    verify(brama.engine, "svc")


def test_old_checkpoints_without_transitions_still_replay(brama: Brama) -> None:
    """A checkpoint written before 0006 has no ``transitions`` in its tally: none counted."""
    with freeze_time(START) as clock:
        brama.register("svc", failure_threshold=1)
        brama.failure("svc")
        clock.tick(3600 * 2)
        brama.close("svc")
        brama.prune(3600)
    with brama.engine.begin() as conn:
        checkpoint = conn.execute(
            select(connections.c.checkpoint).where(connections.c.identifier == "svc")
        ).scalar_one()
        # unknown -> open (threshold 1) and the expiry to half_open at its due time were pruned
        assert checkpoint["tally"]["transitions"] == {"report:open": 1, "expiry:half_open": 1}
        assert stored(brama, "svc") == {
            "report:open": 1,
            "expiry:half_open": 1,
            "manual_close:closed": 1,
        }
        del checkpoint["tally"]["transitions"]
        conn.execute(
            update(connections)
            .where(connections.c.identifier == "svc")
            .values(checkpoint=checkpoint, transitions={"manual_close:closed": 1})
        )
    verify(brama.engine, "svc")
