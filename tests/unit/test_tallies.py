"""The transition tally (revision 0006): counted by cause and target state, through JSON and
back, and read as ``{}`` from a ``NULL`` column or a checkpoint written before it existed."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from brama_sql.circuit import Kind
from brama_sql.tallies import Tally, transition_counts, transition_key

T0 = datetime(2031, 6, 1, 8, 0, tzinfo=timezone.utc)


def test_transitions_are_counted_by_cause_and_target_state() -> None:
    tally = Tally().adding_all(
        [
            (Kind.REGISTERED, T0, None),
            (Kind.FAILURE, T0, None),
            (Kind.TRANSITION, T0, transition_key("report", "open")),
            (Kind.TRANSITION, T0 + timedelta(seconds=60), transition_key("expiry", "half_open")),
            (Kind.FAILURE, T0 + timedelta(seconds=61), None),
            (Kind.TRANSITION, T0 + timedelta(seconds=61), transition_key("report", "open")),
        ]
    )
    assert tally.transitions == {"report:open": 2, "expiry:half_open": 1}
    assert tally.failures == 2
    assert tally.last_transition_at == T0 + timedelta(seconds=61)
    assert Tally().transitions == {}, "each tally counts afresh (no shared default)"


def test_a_tally_goes_through_json_and_back() -> None:
    tally = Tally().adding(Kind.TRANSITION, T0, transition_key("disable", "disabled"))
    assert Tally.from_json(tally.as_json()) == tally
    assert tally.columns()["transitions"] == {"disable:disabled": 1}


def test_older_documents_count_no_transitions() -> None:
    document = Tally().adding(Kind.SUCCESS, T0).as_json()
    del document["transitions"]  # a checkpoint written before revision 0006
    assert Tally.from_json(document).transitions == {}
    assert transition_counts(None) == {}
