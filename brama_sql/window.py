"""The sliding window of the failure-rate and slow-call policies: counters in time buckets,
kept on the connection's row, so deciding costs the same at any length of the log.

A window of ``span`` seconds is cut into :data:`BUCKETS` buckets of ``span / BUCKETS`` each,
aligned on the Unix epoch (bucket ``n`` holds the reports made from ``n * width`` up to, not
including, ``(n + 1) * width``). At an instant ``now`` the window holds the bucket of ``now``
and the ``BUCKETS - 1`` before it: a report leaves the window when its bucket does, between
``span - width`` and ``span`` seconds after it was made. Each bucket counts its calls, its
failures and its slow calls. Pure values: no I/O, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone

BUCKETS = 10
"""How many buckets a window is cut into."""
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True)
class Bucket:
    """The reports made in one bucket of time."""

    index: int
    calls: int = 0
    failures: int = 0
    slow: int = 0


@dataclass(frozen=True)
class Totals:
    """The counts of a window at an instant."""

    calls: int
    failures: int
    slow: int


def bucket_index(at: datetime, span: timedelta) -> int:
    """The number of the bucket that holds the instant ``at`` in a window of ``span``."""
    width = max(1, _microseconds(span) // BUCKETS)
    return _microseconds(at - EPOCH) // width


@dataclass(frozen=True)
class Window:
    """The buckets of a window that hold reports, oldest first."""

    buckets: tuple[Bucket, ...] = ()

    def adding(self, at: datetime, span: timedelta, *, failed: bool, slow: bool) -> Window:
        """This window with one report made at ``at`` counted, and the buckets that left the
        window dropped (as of the later of ``at`` and its newest bucket). A report older than
        the window is not counted."""
        index = bucket_index(at, span)
        newest = max(index, self.buckets[-1].index) if self.buckets else index
        if index <= newest - BUCKETS:
            return self
        kept = [bucket for bucket in self.buckets if bucket.index > newest - BUCKETS]
        for position, bucket in enumerate(kept):
            if bucket.index == index:
                kept[position] = _counted(bucket, failed, slow)
                break
        else:
            kept.append(_counted(Bucket(index), failed, slow))
            kept.sort(key=lambda bucket: bucket.index)
        return Window(tuple(kept))

    def is_behind(self, at: datetime, span: timedelta) -> bool:
        """Whether the instant ``at`` falls before the window's newest bucket."""
        return bool(self.buckets) and bucket_index(at, span) < self.buckets[-1].index

    def totals(self, now: datetime, span: timedelta) -> Totals:
        """The counts of the reports still in the window at ``now``."""
        index = bucket_index(now, span)
        calls = failures = slow = 0
        for bucket in self.buckets:
            if index - BUCKETS < bucket.index <= index:
                calls += bucket.calls
                failures += bucket.failures
                slow += bucket.slow
        return Totals(calls, failures, slow)

    def as_json(self) -> list[list[int]]:
        """``[[index, calls, failures, slow], ...]`` (the ``window_counts`` column)."""
        return [[b.index, b.calls, b.failures, b.slow] for b in self.buckets]

    @classmethod
    def from_json(cls, document: list[list[int]] | None) -> Window | None:
        """The window :meth:`as_json` wrote (``None`` for ``None``)."""
        if document is None:
            return None
        return cls(tuple([Bucket(*map(int, item)) for item in document]))


def _counted(bucket: Bucket, failed: bool, slow: bool) -> Bucket:
    return replace(
        bucket,
        calls=bucket.calls + 1,
        failures=bucket.failures + int(failed),
        slow=bucket.slow + int(slow),
    )


def _microseconds(delta: timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
