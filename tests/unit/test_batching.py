"""The batcher's order (``brama_sql/batching.py``), with a write function that records what it
is given and can be held: a batch of a connection being written by one thread is written
before any other flush of that connection goes on, and a failed write logs and raises what it
lost. (Its writes to a real database: tests/integration/test_batched_reports.py.)"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone

import pytest

from brama_sql.batching import Batcher, Dropped
from brama_sql.errors import BramaDatabaseError
from brama_sql.rows import Identity
from brama_sql.store import Buffered

AT = datetime(2031, 9, 1, tzinfo=timezone.utc)
WAIT_S = 10.0


class Writes:
    """A write function: records each call's batches; the first call waits for ``release``."""

    def __init__(self) -> None:
        self.calls: list[list[tuple[Identity, int]]] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        self.lock = threading.Lock()

    def __call__(self, batches: list[tuple[Identity, list[Buffered]]]) -> Dropped:
        with self.lock:
            first = not self.calls
            self.calls.append([(identity, len(batch)) for identity, batch in batches])
        if first:
            self.entered.set()
            assert self.release.wait(WAIT_S)
        return []


def _success(actor: str = "test") -> Buffered:
    return Buffered(AT, actor, None)


def test_a_flush_of_a_connection_waits_for_its_batch_being_written() -> None:
    writes = Writes()
    batcher = Batcher(writes, timedelta(hours=1))
    one, two = Identity("one", None), Identity("two", None)
    batcher.add(one, _success())
    batcher.add(two, _success())
    everything = threading.Thread(target=batcher.flush)
    everything.start()
    assert writes.entered.wait(WAIT_S), "the flush of every batch never wrote"
    batcher.add(one, _success())  # a newer success of "one", while its batch is being written
    flushed_one = threading.Event()

    def flush_one() -> None:
        batcher.flush(one)  # what a failure() of "one" does before its own write
        flushed_one.set()

    waiter = threading.Thread(target=flush_one)
    waiter.start()
    assert not flushed_one.wait(0.2), "it went on while the older batch was being written"
    writes.release.set()
    everything.join(WAIT_S)
    waiter.join(WAIT_S)
    assert flushed_one.is_set()
    assert writes.calls == [[(one, 1), (two, 1)], [(one, 1)]]
    assert batcher.pending() == 0


def test_a_batch_that_could_not_be_written_is_logged_and_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    lost = BramaDatabaseError("success", RuntimeError("the database went away"))

    def failing(batches: Sequence[tuple[Identity, list[Buffered]]]) -> Dropped:
        raise lost

    batcher = Batcher(failing, timedelta(hours=1))
    batcher.add(Identity("one", None), _success())
    batcher.add(Identity("one", None), _success())
    batcher.add(Identity("two", "fleet"), _success())
    with pytest.raises(BramaDatabaseError) as raised:
        batcher.flush()
    assert raised.value is lost
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 2
    assert "2 batched success reports" in messages[0] and "one" in messages[0]
    assert "1 batched success reports" in messages[1] and "fleet" in messages[1]
    assert batcher.pending() == 0
