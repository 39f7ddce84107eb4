"""Opt-in batched reporting, on every dialect: successes of a circuit seen healthy are kept back
and written together (each at its own time, by its own caller), within the window by a thread,
before any other write of the same process to the connection, on flush() and at exit; anything
that may change the state is written at once; a batch written after another process changed
the circuit goes through the state machine; a forked child never writes its parent's batch.
Report times come from a clock the test moves; the log explains the row throughout."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy.engine import URL, Connection

from brama_sql import Brama, Kind, State
from brama_sql.errors import ArgumentTypeError, BramaDatabaseError, InvalidArgumentError
from brama_sql.replay import verify

START = datetime(2031, 9, 1, 6, 0, tzinfo=timezone.utc)
WAIT_S = 10.0


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now

    def tick(self, seconds: float = 0.001) -> None:
        self.now += timedelta(seconds=seconds)


def kinds(brama: Brama, identifier: str = "svc") -> list[Kind]:
    return [event.kind for event in brama.events(identifier)]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def batched(make_brama: Callable[..., Brama], clock: Clock) -> Brama:
    """A Brama that batches for an hour (only flushes and other writes write its batches)
    and has seen 'svc' closed and healthy."""
    brama = make_brama(clock=clock, batch_reports=3600, failure_threshold=3)
    brama.register("svc")
    brama.success("svc")  # unknown -> closed: written at once
    assert brama.available("svc")
    return brama


def test_successes_are_kept_back_and_written_together(
    batched: Brama, make_brama: Callable[..., Brama], clock: Clock
) -> None:
    reader = make_brama()
    logged = len(reader.events("svc"))
    times = []
    for _ in range(5):
        clock.tick()
        times.append(clock.now)
        assert batched.success("svc") is None
    assert len(reader.events("svc")) == logged, "nothing written yet"
    assert reader.status("svc").total_successes == 1
    batched.flush()
    written = reader.events("svc")[logged:]
    assert [event.kind for event in written] == [Kind.SUCCESS] * 5
    assert [event.occurred_at for event in written] == times
    assert {event.actor for event in written} == {batched.actor()}
    assert reader.status("svc").total_successes == 6
    verify(batched.engine, "svc")


def test_the_batches_of_many_connections_are_written_in_one_transaction(
    make_brama: Callable[..., Brama], clock: Clock
) -> None:
    """A flush writes the batches of every healthy connection in one transaction, whatever
    their number (a fleet of connections spread over a hundred costs one, not a hundred), and
    the batch of a connection another process tripped meanwhile in one of its own, through
    the state machine."""
    from sqlalchemy import event

    brama = make_brama(clock=clock, batch_reports=3600, failure_threshold=3)
    other = make_brama(clock=clock)
    names = [f"svc-{index:02d}" for index in range(12)]
    for name in names:
        brama.register(name, scope="fleet" if name.endswith("1") else None)
    scopes = {name: "fleet" if name.endswith("1") else None for name in names}
    for name in names:
        brama.success(name, scope=scopes[name])  # unknown -> closed: written at once
        assert brama.available(name, scope=scopes[name])
    for _ in range(3):
        for name in names:
            clock.tick()
            assert brama.success(name, scope=scopes[name]) is None
    for _ in range(3):
        other.failure("svc-05")
    commits: list[None] = []
    event.listen(brama.engine, "commit", lambda _conn: commits.append(None))
    brama.flush()
    assert len(commits) == 2, "one transaction for the healthy eleven, one for the tripped one"
    for name in names:
        status = other.status(name, scope=scopes[name])
        assert status.total_successes == 4, name
        verify(brama.engine, name, scopes[name])
    assert other.status("svc-05").state is State.OPEN, "late successes do not close it"


@pytest.mark.parametrize("dialect", ["postgresql", "mysql"], indirect=True)
def test_a_row_locked_too_long_costs_only_its_own_batch(
    make_brama: Callable[..., Brama],
    clock: Clock,
    hold_row_lock: Callable[..., AbstractContextManager[Connection]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The batches written together wait for every row's lock: a writer stuck holding one (up
    to the lock wait) must not cost the others their successes. They are then written each
    alone, and only the locked row's batch is lost. (SQLite's one write lock holds every row:
    there is nothing to write apart.)"""
    brama = make_brama(clock=clock, batch_reports=3600, lock_timeout=1)
    names = ("other", "svc")
    for name in names:
        brama.register(name)
        brama.success(name)  # unknown -> closed: written at once
        assert brama.available(name)
    for name in names:
        clock.tick()
        assert brama.success(name) is None
    with (
        caplog.at_level(logging.WARNING, logger="brama_sql"),
        hold_row_lock(identifier="svc"),
        pytest.raises(BramaDatabaseError),
    ):
        brama.flush()
    assert brama.status("other").total_successes == 2
    assert brama.status("svc").total_successes == 1
    (warning,) = [
        record.getMessage() for record in caplog.records if "dropped" in record.getMessage()
    ]
    assert "1 batched success reports" in warning and "svc" in warning
    for name in names:
        verify(brama.engine, name)


def test_a_listener_may_report_on_a_connection_whose_batch_its_thread_is_writing(
    make_brama: Callable[..., Brama], clock: Clock
) -> None:
    """A flush waits for a batch of its connection another thread is writing; a listener
    called by that write, in that thread, that reports on one of the connections being
    written must not wait for its own thread (it would wait for ever)."""
    brama = make_brama(clock=clock, batch_reports=3600, failure_threshold=1, expiry=10)
    other = make_brama(clock=clock)
    for name in ("mail", "sms"):
        brama.register(name)
        brama.success(name)  # unknown -> closed: written at once
        assert brama.available(name)
    other.failure("mail")  # open: its batch goes through the state machine when written
    clock.tick(11)  # past the expiry: the batch's success finds it half-open and closes it
    for name in ("mail", "sms"):
        clock.tick()
        assert brama.success(name) is None  # this process saw both healthy lately
    reported: list[Kind] = []

    def on_transition(event: Any) -> None:
        if event.to_state is State.CLOSED:
            brama.failure("sms", reason="seen by the listener")
            reported.append(Kind.FAILURE)

    brama.on_state_change(on_transition)
    flusher = threading.Thread(target=brama.flush, daemon=True)
    flusher.start()
    flusher.join(WAIT_S)
    assert not flusher.is_alive(), "the listener's report waited for its own thread"
    assert reported == [Kind.FAILURE]
    assert other.status("mail").state is State.CLOSED
    # Its batched success, written first, then the listener's failure (which trips it).
    assert kinds(other, "sms")[-3:] == [Kind.SUCCESS, Kind.FAILURE, Kind.TRANSITION]
    for name in ("mail", "sms"):
        verify(brama.engine, name)


def test_a_batch_that_leaves_a_long_tail_folds_it(
    batched: Brama, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches are healthy successes written under the shared lock: once the connection's tail
    holds more than FOLD_GAP events, it is folded into the row's tallies, as after a single
    healthy success (reads count no longer a tail)."""
    from sqlalchemy import select

    from brama_sql import store
    from brama_sql.schema import connections

    monkeypatch.setattr(store, "FOLD_GAP", 6)

    def tallied() -> int:
        with batched.engine.connect() as conn:
            found: int = conn.execute(
                select(connections.c.tallied_through).where(connections.c.identifier == "svc")
            ).scalar_one()
        return found

    through = tallied()
    for _ in range(4):
        clock.tick()
        batched.success("svc")
    batched.flush()
    assert tallied() == through, "a tail of 4: not folded"
    for _ in range(4):
        clock.tick()
        batched.success("svc")
    batched.flush()
    assert tallied() == batched.events("svc")[-1].id, "a tail of 8: folded"
    assert batched.status("svc").total_successes == 9
    verify(batched.engine, "svc")


def test_the_thread_writes_a_batch_within_its_window(
    make_brama: Callable[..., Brama], clock: Clock
) -> None:
    brama = make_brama(clock=clock, batch_reports=0.05)
    brama.register("svc")
    brama.success("svc")
    assert brama.available("svc")
    brama.success("svc")
    reader = make_brama()
    bound = time.monotonic() + WAIT_S
    while reader.status("svc").total_successes < 2:
        assert time.monotonic() < bound, "the batch was never written"
        time.sleep(0.01)
    verify(brama.engine, "svc")


def test_a_failure_writes_the_batch_first_and_then_goes_at_once(
    batched: Brama, clock: Clock
) -> None:
    for _ in range(2):
        clock.tick()
        batched.success("svc")
    clock.tick()
    batched.failure("svc")
    assert kinds(batched)[-3:] == [Kind.SUCCESS, Kind.SUCCESS, Kind.FAILURE]
    clock.tick()
    batched.success("svc")  # failures counted: it resets them, so it is written at once
    assert kinds(batched)[-1] is Kind.SUCCESS
    assert batched.status("svc").failure_count == 0
    verify(batched.engine, "svc")


def test_a_circuit_not_seen_lately_is_reported_at_once(
    make_brama: Callable[..., Brama], clock: Clock
) -> None:
    brama = make_brama(clock=clock, batch_reports=1)
    brama.register("svc")
    brama.success("svc")
    assert brama.available("svc")
    clock.tick(1)  # the window has passed since the circuit was seen
    logged = len(brama.events("svc"))
    brama.success("svc")
    assert len(brama.events("svc")) == logged + 1


def test_a_batch_written_after_another_process_tripped_the_circuit(
    batched: Brama, make_brama: Callable[..., Brama], clock: Clock
) -> None:
    other = make_brama(clock=clock)
    for _ in range(2):
        clock.tick()
        batched.success("svc")
    clock.tick()
    for _ in range(3):
        other.failure("svc")
    assert other.status("svc").state is State.OPEN
    batched.flush()
    status = other.status("svc")
    assert status.state is State.OPEN, "late successes do not close an open circuit"
    assert status.total_successes == 3
    verify(batched.engine, "svc")


def test_status_and_manual_actions_of_this_process_see_its_batch(
    batched: Brama, clock: Clock
) -> None:
    clock.tick()
    batched.success("svc")
    assert batched.status("svc").total_successes == 2
    clock.tick()
    batched.success("svc")
    batched.open("svc")
    assert kinds(batched)[-2:] == [Kind.SUCCESS, Kind.TRANSITION]
    verify(batched.engine, "svc")


def test_a_forked_child_never_writes_its_parent_s_batch(batched: Brama, clock: Clock) -> None:
    if not hasattr(os, "fork"):
        pytest.skip("needs os.fork (POSIX)")
    for _ in range(3):
        clock.tick()
        batched.success("svc")
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            batched.flush()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert batched.status("svc").total_successes == 4, "written once, by the parent"
    verify(batched.engine, "svc")


def test_what_is_kept_back_is_written_at_exit(db_url: URL) -> None:
    url = db_url.render_as_string(hide_password=False)
    script = textwrap.dedent(
        f"""
        from brama_sql import Brama
        brama = Brama({url!r}, batch_reports=3600)
        brama.register("svc")
        brama.success("svc")
        assert brama.available("svc")
        for _ in range(4):
            brama.success("svc")
        assert brama._batcher.pending() == 4
        """
    )
    ran = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr
    reader = Brama(url)
    try:
        assert reader.status("svc").total_successes == 5
        verify(reader.engine, "svc")
    finally:
        reader.dispose()


def test_bad_windows_are_refused(make_brama: Callable[..., Brama]) -> None:
    with pytest.raises(ArgumentTypeError):
        make_brama(batch_reports="100ms")
    for nonsense in (0, -1, float("inf")):
        with pytest.raises(InvalidArgumentError):
            make_brama(batch_reports=nonsense)
    with pytest.raises(InvalidArgumentError, match="clock"):
        make_brama(batch_reports=1, clock="database")
