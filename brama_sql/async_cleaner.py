"""Periodic cleanup in asyncio code: a task that awaits ``brama.cleanup()`` on a timer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta
from typing import TYPE_CHECKING

from brama_sql import validation

if TYPE_CHECKING:
    from brama_sql.async_brama import AsyncBrama

logger = logging.getLogger("brama_sql")


class AsyncCleaner:
    """Runs :meth:`AsyncBrama.cleanup` every ``interval`` seconds in a task of the running
    event loop until stopped, as :class:`~brama_sql.Cleaner` does in a thread. The first run
    happens one ``interval`` after :meth:`start`; an error in one run is logged and the next
    one happens as planned."""

    def __init__(self, brama: AsyncBrama, interval: float | timedelta = 60.0) -> None:
        self.brama = brama
        self.interval = validation.seconds(interval, "interval")
        self.runs = 0
        """How many cleanup runs have finished, failed ones included."""
        self.removed = 0
        """How many connections the runs have removed in total."""
        self._task: asyncio.Task[None] | None = None
        self._run: asyncio.Future[int] | None = None
        """The cleanup running now, which :meth:`stop` lets finish."""

    def __repr__(self) -> str:
        state = "running" if self.is_running else "stopped"
        return f"AsyncCleaner({self.brama!r}, interval={self.interval:g}, {state})"

    @property
    def is_running(self) -> bool:
        """Whether the cleanup task is running."""
        return self._task is not None and not self._task.done()

    def start(self) -> AsyncCleaner:
        """Start the task in the running event loop (nothing when it runs); returns the
        cleaner. Raises ``RuntimeError`` outside a running event loop."""
        if not self.is_running:
            self._task = asyncio.get_running_loop().create_task(self._loop())
        return self

    async def stop(self) -> None:
        """End the task and wait for it; a cleanup that is running is not interrupted (its
        transaction finishes)."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            if not task.cancelled():
                raise  # the caller itself was cancelled
        running, self._run = self._run, None
        if running is not None and not running.done():
            await asyncio.wait([running])  # a failure is logged by _log_failure

    async def run_once(self) -> int:
        """Run one cleanup now; return how many connections it removed."""
        try:
            removed = await self.brama.cleanup()
        finally:
            self.runs += 1
        self.removed += removed
        if removed:
            logger.info("brama_sql cleanup removed %d inactive connection(s)", removed)
        return removed

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self._run = run = asyncio.ensure_future(self.run_once())
            run.add_done_callback(self._log_failure)
            with contextlib.suppress(Exception):  # logged by _log_failure
                await asyncio.shield(run)

    def _log_failure(self, run: asyncio.Future[int]) -> None:
        error = None if run.cancelled() else run.exception()
        if error is not None:
            logger.error(
                "brama_sql cleanup failed; the next run is in %g seconds",
                self.interval,
                exc_info=error,
            )
