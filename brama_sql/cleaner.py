"""Periodic cleanup inside a process: a daemon thread that calls ``brama.cleanup()`` on a timer."""

from __future__ import annotations

import logging
import threading
from datetime import timedelta
from types import TracebackType
from typing import TYPE_CHECKING

from brama_sql import validation
from brama_sql.errors import ArgumentTypeError

if TYPE_CHECKING:
    from brama_sql.brama import Brama

logger = logging.getLogger("brama_sql")

DEFAULT_INTERVAL = 60.0
"""Seconds between two cleanup runs unless told otherwise."""


class Cleaner:
    """Runs :meth:`Brama.cleanup` every ``interval`` seconds in a daemon thread until stopped.

    The first run happens one ``interval`` after :meth:`start`. An error in one run is logged on
    the ``brama_sql`` logger and the next run happens as planned. Use it as a context manager to
    start it on entry and stop it on exit::

        with Cleaner(brama, interval=300):
            serve_forever()
    """

    def __init__(self, brama: Brama, interval: float | timedelta = DEFAULT_INTERVAL) -> None:
        if not callable(getattr(brama, "cleanup", None)):
            raise ArgumentTypeError(f"brama must be a Brama, not {type(brama).__name__}")
        self.brama = brama
        self.interval = validation.seconds(interval, "interval")
        self.runs = 0
        """How many cleanup runs have finished, failed ones included."""
        self.removed = 0
        """How many connections the runs have removed in total."""
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._counting = threading.Lock()

    def __repr__(self) -> str:
        state = "running" if self.is_running else "stopped"
        return f"Cleaner({self.brama!r}, interval={self.interval:g}, {state})"

    @property
    def is_running(self) -> bool:
        """Whether the cleanup thread is alive."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    def start(self) -> Cleaner:
        """Start the thread (does nothing when it already runs); returns the cleaner."""
        with self._lock:
            if self.is_running:
                return self
            self._stopping = threading.Event()
            self._thread = threading.Thread(
                target=self._loop,
                args=(self._stopping,),
                name="brama-sql-cleaner",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Ask the thread to end and wait up to ``timeout`` seconds (``None``: until it ends).

        A cleanup that is running when this is called finishes first; no new run begins.
        """
        with self._lock:
            thread = self._thread
            self._stopping.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def run_once(self) -> int:
        """Run one cleanup now, in the calling thread; return how many connections it removed."""
        try:
            removed = self.brama.cleanup()
        except BaseException:
            with self._counting:
                self.runs += 1
            raise
        with self._counting:
            self.runs += 1
            self.removed += removed
        if removed:
            logger.info("brama_sql cleanup removed %d inactive connection(s)", removed)
        return removed

    def _loop(self, stopping: threading.Event) -> None:
        while not stopping.wait(self.interval):
            try:
                self.run_once()
            except Exception:
                logger.exception(
                    "brama_sql cleanup failed; the next run is in %g seconds", self.interval
                )

    def __enter__(self) -> Cleaner:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
