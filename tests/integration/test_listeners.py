"""State-change listeners: called with each transition event after its transaction committed,
once (also when the transaction was retried), only by the ``Brama`` that wrote it; a raising
listener is logged and never breaks the call; removal; the INFO line; on every dialect."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from freezegun import freeze_time
from freezegun.api import FrozenDateTimeFactory
from sqlalchemy import create_engine, select
from sqlalchemy.engine import URL
from sqlalchemy.exc import OperationalError

from brama_sql import ArgumentTypeError, Brama, Cause, Event, Kind, Listener, State, store
from brama_sql.schema import events

T0 = datetime(2031, 9, 10, 11, 12, 13, tzinfo=timezone.utc)
MakeBrama = Callable[..., Brama]


@pytest.fixture
def clock() -> Iterator[FrozenDateTimeFactory]:
    with freeze_time(T0) as frozen:
        yield frozen


def moves(seen: list[Event]) -> list[tuple[str, str, str]]:
    return [(str(event.from_state), str(event.to_state), str(event.cause)) for event in seen]


def logged_transitions(brama: Brama, identifier: str) -> list[Event]:
    return [event for event in brama.events(identifier) if event.kind is Kind.TRANSITION]


def test_a_listener_gets_each_transition_event_once_after_the_commit(
    brama: Brama, db_url: URL
) -> None:
    brama.register("svc", scope="pay", failure_threshold=2)
    seen: list[Event] = []
    committed: list[bool] = []
    engine = create_engine(db_url)  # another connection: sees only committed rows

    def listener(event: Event) -> None:
        with engine.connect() as conn:
            found = conn.execute(select(events.c.id).where(events.c.id == event.id)).first()
        committed.append(found is not None)
        seen.append(event)

    handle = brama.on_state_change(listener)
    assert isinstance(handle, Listener) and handle.active
    brama.failure("svc", scope="pay")
    brama.success("svc", scope="pay")
    brama.failure("svc", scope="pay")
    moved = brama.failure("svc", scope="pay")
    engine.dispose()
    assert moved is not None
    assert seen == logged_transitions(brama, "svc"), "the very events of the log, with ids"
    assert moves(seen) == [("unknown", "closed", "report"), ("closed", "open", "report")]
    assert committed == [True, True], "called after the transaction had committed"
    assert seen[-1].occurred_at == moved.occurred_at and seen[-1].actor == brama.actor()
    assert seen[-1].scope == "pay"


def test_usable_as_a_decorator_and_removable(brama: Brama) -> None:
    brama.register("svc", failure_threshold=1)
    seen: list[Event] = []

    @brama.on_state_change
    def record(event: Event) -> None:
        """Keep the event."""
        seen.append(event)

    assert isinstance(record, Listener)
    assert record.__name__ == "record" and record.__doc__ == "Keep the event."
    brama.failure("svc")
    assert len(seen) == 1
    record(seen[0])  # the decorated name still calls the function
    assert len(seen) == 2
    record.remove()
    record.remove()  # a second removal does nothing
    assert not record.active
    brama.close("svc")
    assert len(seen) == 2
    assert len(logged_transitions(brama, "svc")) == 2


def test_a_raising_listener_is_logged_and_the_call_still_succeeds(
    brama: Brama, caplog: pytest.LogCaptureFixture
) -> None:
    brama.register("svc", failure_threshold=1)
    after: list[Event] = []

    @brama.on_state_change
    def broken(event: Event) -> None:
        raise RuntimeError("listener bug")

    brama.on_state_change(after.append)
    with caplog.at_level(logging.ERROR, logger="brama_sql"):
        moved = brama.failure("svc")
    assert moved is not None and moved.to_state is State.OPEN
    assert len(after) == 1, "the listeners after it were called"
    (record,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "listener" in record.getMessage() and record.exc_info is not None
    assert brama.status("svc").state is State.OPEN


def test_one_info_line_per_transition(brama: Brama, caplog: pytest.LogCaptureFixture) -> None:
    brama.register("svc", scope="pay", failure_threshold=1)
    with caplog.at_level(logging.INFO, logger="brama_sql"):
        brama.failure("svc", scope="pay", reason="timeout")
        brama.success("svc", scope="pay")  # a late result: no transition
        brama.close("svc", scope="pay", reason="fixed")
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert lines == [
        "circuit 'svc' in scope 'pay': unknown -> open (report: failure threshold reached)",
        "circuit 'svc' in scope 'pay': open -> closed (manual_close: fixed)",
    ]


def test_every_kind_of_transition_is_announced_by_the_call_that_wrote_it(
    make_brama: MakeBrama, clock: FrozenDateTimeFactory
) -> None:
    brama = make_brama(
        inactive_after=3600,
        connections={"declared": {"failure_threshold": 1, "expiry": 30}},
    )
    seen: list[Event] = []
    brama.on_state_change(seen.append)

    brama.failure("declared")  # registers it in this transaction, then trips it
    clock.tick(31)
    brama.failure("declared")  # persists the expiry, then fails the probe
    brama.register("svc", failure_threshold=5, expiry=10, half_open_max_calls=1)
    brama.open("svc")
    brama.reset("svc")
    for _ in range(3):
        brama.failure("svc")
    brama.configure("svc", failure_threshold=2)  # closed with 3 failures: opens
    clock.tick(11)
    assert brama.available("svc")  # claims a permit: persists the expiry
    brama.open("svc")
    clock.tick(7200)
    assert brama.cleanup() == 2  # persists each pending expiry, then removes
    assert moves(seen) == [
        ("unknown", "open", "report"),
        ("open", "half_open", "expiry"),
        ("half_open", "open", "report"),
        ("unknown", "open", "manual_open"),
        ("open", "closed", "manual_reset"),
        ("closed", "open", "configured"),
        ("open", "half_open", "expiry"),
        ("half_open", "open", "manual_open"),
        ("open", "half_open", "expiry"),
        ("open", "half_open", "expiry"),
    ]
    logged = [e for e in brama.events() if e.kind is Kind.TRANSITION]
    assert sorted(seen, key=lambda e: e.id) == logged
    assert len({event.id for event in seen}) == len(seen)


def test_only_the_brama_that_wrote_a_transition_announces_it(make_brama: MakeBrama) -> None:
    writer, other = make_brama(), make_brama()
    by_writer: list[Event] = []
    by_other: list[Event] = []
    writer.on_state_change(by_writer.append)
    other.on_state_change(by_other.append)
    writer.register("svc", failure_threshold=1)
    writer.failure("svc")
    assert other.status("svc").state is State.OPEN  # a read announces nothing
    assert len(by_writer) == 1 and by_other == []
    other.close("svc")
    assert len(by_writer) == 1 and moves(by_other) == [("open", "closed", "manual_close")]


def test_a_retried_transaction_announces_only_the_attempt_that_committed(
    brama: Brama, monkeypatch: pytest.MonkeyPatch
) -> None:
    brama.register("svc", failure_threshold=1)
    seen: list[Event] = []
    brama.on_state_change(seen.append)
    real_run = brama._store.run
    rolled_back: list[Any] = []

    def run_failing_first(operation: str, body: Callable[..., Any], **options: Any) -> Any:
        def failing_once(conn: Any) -> Any:
            result = body(conn)
            if not rolled_back:
                rolled_back.append(result)  # the first attempt wrote a trip: roll it back
                raise OperationalError(
                    "COMMIT", {}, Exception("injected"), connection_invalidated=True
                )
            return result

        return real_run(operation, failing_once if options.get("write") else body, **options)

    monkeypatch.setattr(brama._store, "run", run_failing_first)
    moved = brama.failure("svc")
    assert len(rolled_back) == 1
    _, first_journal = rolled_back[0]
    assert first_journal.transitions, "the rolled-back attempt had written a transition"
    assert moved is not None and moved.to_state is State.OPEN
    logged = logged_transitions(brama, "svc")
    assert seen == logged and len(seen) == 1
    assert brama.status("svc").total_failures == 1


def test_listeners_must_be_plain_callables(brama: Brama) -> None:
    async def coroutine(event: Event) -> None:
        pass

    for bad in (None, 42, "print"):
        with pytest.raises(ArgumentTypeError, match="callable"):
            brama.on_state_change(bad)  # type: ignore[arg-type]
    with pytest.raises(ArgumentTypeError, match="coroutine"):
        brama.on_state_change(coroutine)  # type: ignore[arg-type]


def test_no_listener_no_read_back(brama: Brama, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without listeners a transition costs no extra statement (only the INFO line)."""

    def unexpected(self: Any, conn: Any) -> None:
        raise AssertionError("read back without listeners")

    monkeypatch.setattr(store.Journal, "read_back", unexpected)
    brama.register("svc", failure_threshold=1)
    assert brama.failure("svc") is not None
    assert brama.events("svc")[-1].cause is Cause.REPORT


def test_expiry_persisted_by_a_guard_is_announced_by_it(
    brama: Brama, clock: FrozenDateTimeFactory
) -> None:
    brama.register("svc", failure_threshold=1, expiry=5)
    brama.failure("svc")
    seen: list[Event] = []
    brama.on_state_change(seen.append)
    clock.tick(timedelta(seconds=6))
    with brama.guard("svc"):
        pass
    assert moves(seen) == [("open", "half_open", "expiry"), ("half_open", "closed", "report")]
    assert seen[0].occurred_at == T0 + timedelta(seconds=5)
