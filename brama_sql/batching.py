"""Opt-in batched reporting: successes of a healthy circuit kept back for a short window and
written together, the batches of every connection due at once in one transaction.

With ``Brama(batch_reports=w)``, a ``success()`` on a circuit this process saw closed with no
failures counted, within ``w`` seconds, is not written at once: it joins its connection's
batch, stamped with the time it happened and its caller, and returns ``None``. A batch is
written at most ``w`` seconds after its first success by this process's flusher thread (which
writes every batch due then, of however many connections, in one transaction: see
:meth:`~brama_sql.store.Store.record_successes`), before any other write this process makes to
the same connection (so the log keeps the order in which this process reported: that write
waits for a batch of its connection being written by another thread), on
:meth:`Batcher.flush` (``Brama.flush()``), and at exit. Everything else is written at once:
failures, successes of a circuit that is not healthy or not seen lately (they may change the
state), manual actions.

What it costs: a process that dies without exiting (killed, power lost) loses the successes
of its last ``w`` seconds; other processes' ``status()`` counts successes up to ``w`` late; a
batch written after another process changed the circuit goes through the state machine as if
reported when it was written (each success at its own time). Writing fails like a report does:
``on_db_error`` is not consulted for a batch written in the background, whose loss is logged
as a WARNING naming how many successes were dropped.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import math
import os
import threading
import weakref
from collections.abc import Callable, Sequence
from datetime import timedelta

from brama_sql import watchdog
from brama_sql.errors import BramaError
from brama_sql.rows import Identity
from brama_sql.store import Buffered

logger = logging.getLogger("brama_sql")

Dropped = Sequence[tuple[Identity, Sequence[Buffered], BramaError]]
"""Batches that could not be written, each with its error."""
Write = Callable[[list[tuple[Identity, list[Buffered]]]], Dropped]
"""Writes the batches of several connections; returns those it could not write, with their
errors, and raises when it wrote none (:meth:`~brama_sql.store.Store.record_successes`)."""


class Batcher:
    """The batches of one ``Brama``, and the thread that writes them once due."""

    def __init__(self, write: Write, window: timedelta) -> None:
        self.write = write
        self.window = window
        self._batches: dict[Identity, list[Buffered]] = {}
        self._due: dict[Identity, float] = {}
        self._writing: dict[Identity, int] = {}
        """The connections whose batch a thread is writing (taken, not written yet), and that
        thread's identifier: a listener the write calls in that thread may report on them, and
        must not wait for its own thread."""
        self._lock = threading.Condition(threading.Lock())
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        _live.add(self)

    def add(self, identity: Identity, item: Buffered) -> None:
        """Keep ``item`` in its connection's batch (written within the window)."""
        self._adopt_fork()
        with self._lock:
            batch = self._batches.setdefault(identity, [])
            batch.append(item)
            if len(batch) == 1:
                self._due[identity] = watchdog.monotonic() + self.window.total_seconds()
                self._lock.notify()
        self._start()

    def flush(self, identity: Identity | None = None) -> None:
        """Write the batch of ``identity`` (every batch when ``None``) now, after any of the
        same connection another thread is writing; raises what the write raises (the
        successes of a batch that failed are not kept)."""
        self._adopt_fork()
        me = threading.get_ident()
        with self._lock:
            if identity is None:
                while any(writer != me for writer in self._writing.values()):
                    self._lock.wait()
                names = list(self._batches)
            else:
                while self._writing.get(identity, me) != me:
                    self._lock.wait()
                names = [identity]
            taken, marked = self._take(names)
        self._write(taken, marked)

    def _take(
        self, names: list[Identity]
    ) -> tuple[list[tuple[Identity, list[Buffered]]], list[Identity]]:
        """Take the batches of ``names`` out (under the lock), and mark their connections as
        being written by this thread: those it marked now (not those a write further up this
        thread's stack marked, a listener's report)."""
        taken = [(name, batch) for name in names if (batch := self._batches.pop(name, None))]
        for name in names:
            self._due.pop(name, None)
        me = threading.get_ident()
        marked = [name for name, _ in taken if name not in self._writing]
        self._writing.update((name, me) for name in marked)
        return taken, marked

    def _write(self, taken: list[tuple[Identity, list[Buffered]]], marked: list[Identity]) -> None:
        """Write batches taken out, log what is lost, and raise the first error."""
        if not taken:
            return
        dropped: Dropped
        try:
            dropped = self.write(taken)
        except BramaError as error:
            dropped = [(name, batch, error) for name, batch in taken]
        finally:
            with self._lock:
                for name in marked:
                    self._writing.pop(name, None)
                self._lock.notify_all()
        for name, batch, cause in dropped:
            logger.warning(
                "brama_sql: %d batched success reports for %s dropped: %s",
                len(batch),
                name,
                cause,
            )
        if dropped:
            raise dropped[0][2]

    def pending(self) -> int:
        """How many successes wait in batches."""
        with self._lock:
            return sum(len(batch) for batch in self._batches.values())

    def _start(self) -> None:
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=_patrol, args=(weakref.ref(self),), name="brama_sql-batches", daemon=True
                )
                self._thread.start()

    def _adopt_fork(self) -> None:
        """In a forked child: the batches are the parent's to write; start afresh."""
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self._batches, self._due, self._writing = {}, {}, {}
            self._lock = threading.Condition(threading.Lock())
            self._thread = None

    def _next(self) -> tuple[list[Identity], float]:
        """The batches due now, and the seconds until the next one is (infinite: none); one
        whose connection has a batch being written waits for it (its writer wakes the
        thread)."""
        now = watchdog.monotonic()
        free = [(name, at) for name, at in self._due.items() if name not in self._writing]
        due = [name for name, at in free if at <= now]
        later = [at - now for name, at in free if at > now]
        return due, min(later, default=math.inf)


def _patrol(reference: weakref.ref[Batcher]) -> None:
    """Write each batch once due; sleep until the next is (parked while there is none)."""
    while True:
        batcher = reference()
        if batcher is None or batcher._pid != os.getpid():
            return
        with batcher._lock:
            due, wait = batcher._next()
            if not due:
                batcher._lock.wait(None if wait == math.inf else wait)
                continue
            taken, marked = batcher._take(due)
        with contextlib.suppress(BramaError):  # logged by _write()
            batcher._write(taken, marked)
        del batcher, taken


_live: weakref.WeakSet[Batcher] = weakref.WeakSet()


@atexit.register
def _flush_at_exit() -> None:
    """Write what every live batcher of this process still holds."""
    for batcher in list(_live):
        if batcher._pid == os.getpid():
            with contextlib.suppress(BramaError):  # logged by _write()
                batcher.flush()
