"""The rate policies' bucketed window and the state machine's rate rules, without a database:
bucket boundaries, reports leaving the window, and the healthy-success fast path (appending
under the shared lock, folding the tail in later) agreeing with a replay of every report."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from brama_sql import circuit as machine
from brama_sql.circuit import Circuit, Kind, Outcome, Settings, State
from brama_sql.window import BUCKETS, Window, bucket_index

T0 = datetime(2031, 1, 1, tzinfo=timezone.utc)
SPAN = timedelta(seconds=10)


def test_a_report_leaves_the_window_when_its_bucket_does() -> None:
    window = Window().adding(T0, SPAN, failed=True, slow=False)
    assert window.totals(T0 + timedelta(seconds=9.999999), SPAN).calls == 1
    assert window.totals(T0 + timedelta(seconds=10), SPAN).calls == 0
    late = T0 + timedelta(seconds=0.999999)  # same 1-second bucket as T0
    window = window.adding(late, SPAN, failed=False, slow=True)
    assert window.as_json() == [[bucket_index(T0, SPAN), 2, 1, 1]]
    assert window.totals(late + timedelta(seconds=9.000001), SPAN).calls == 0
    assert Window.from_json(window.as_json()) == window


def test_a_report_out_of_time_order_never_drops_newer_buckets_nor_decides_a_rate() -> None:
    rated = Settings(
        failure_threshold=100,
        expiry=timedelta(seconds=60),
        failure_rate_threshold=0.5,
        window=SPAN,
        minimum_calls=2,
    )
    closed = Circuit(State.CLOSED)
    newer = machine.record(closed, rated, Kind.SUCCESS, T0 + timedelta(seconds=12)).circuit
    assert newer.window is not None
    # Older than the window as of its newest bucket: not counted, and nothing dropped.
    assert newer.window.adding(T0, SPAN, failed=True, slow=False) == newer.window
    # Older than the newest bucket but inside the window: counted, yet it decides no rate
    # (1 failure of 2 calls would reach 0.5 in time order).
    earlier = T0 + timedelta(seconds=8)
    assert newer.window.is_behind(earlier, SPAN)
    outcome = machine.record(newer, rated, Kind.FAILURE, earlier)
    assert outcome.circuit.state is State.CLOSED
    assert [o.kind for o in outcome.occurrences] == [Kind.FAILURE]
    assert outcome.circuit.window is not None
    assert outcome.circuit.window.totals(T0 + timedelta(seconds=12), SPAN).calls == 2
    # The same failure in time order trips it.
    ordered = machine.record(newer, rated, Kind.FAILURE, T0 + timedelta(seconds=12))
    assert ordered.circuit.state is State.OPEN


def test_the_window_keeps_at_most_its_buckets() -> None:
    window = Window()
    for second in range(3 * BUCKETS):
        window = window.adding(T0 + timedelta(seconds=second), SPAN, failed=False, slow=False)
    assert len(window.buckets) == BUCKETS
    assert window.totals(T0 + timedelta(seconds=3 * BUCKETS - 1), SPAN).calls == BUCKETS


RATED = Settings(
    failure_threshold=1000,
    expiry=timedelta(days=1),
    failure_rate_threshold=0.5,
    window=SPAN,
    minimum_calls=3,
    slow_call_duration=timedelta(seconds=1),
    slow_call_rate_threshold=0.75,
)

reports = st.lists(
    st.tuples(
        st.sampled_from([Kind.SUCCESS, Kind.FAILURE]),
        st.integers(min_value=0, max_value=4_000_000),  # microseconds after the previous one
        st.sampled_from([None, 0.5, 1.5]),
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(reports)
def test_appending_healthy_successes_and_folding_them_later_agrees_with_replay(
    sequence: list[tuple[Kind, int, float | None]],
) -> None:
    replayed = Circuit(State.CLOSED)
    row, tail = Circuit(State.CLOSED), []
    now = T0
    for kind, gap, duration in sequence:
        now += timedelta(microseconds=gap)
        expected = machine.record(replayed, RATED, kind, now, duration=duration)
        replayed = expected.circuit
        attempt = machine.record(row, RATED, kind, now, duration=duration)
        if machine.appendable(row, RATED, now, attempt):
            assert expected.occurrences == attempt.occurrences
            tail.append((now, duration))
            continue
        folded = machine.fold_tail(row, RATED, tail)
        outcome: Outcome = machine.record(folded, RATED, kind, now, duration=duration)
        assert outcome.occurrences == expected.occurrences
        row, tail = outcome.circuit, []
    assert machine.fold_tail(row, RATED, tail) == replayed
