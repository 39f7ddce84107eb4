"""The tallies a connection's row keeps of its log: how many successes and failures it holds, how
many transitions of each cause to each state, and when its latest report, transition and event
happened.

A row's tally counts its events up to ``tallied_through``; a write under the exclusive row lock
adds its own events (:meth:`Tally.adding`) and the tail of healthy successes written since under
the shared lock (:meth:`Tally.with_tail`). So ``status()`` reads the row and a short tail
instead of counting the log; ``verify`` folds the log the same way and compares. A tally is a
pure value: no I/O here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from brama_sql.circuit import Kind, replace
from brama_sql.columns import Reader

COLUMNS = (
    "successes",
    "failures",
    "last_success_at",
    "last_failure_at",
    "last_transition_at",
    "last_event_at",
    "transitions",
)
"""The ``brama_connections`` columns of a tally, named like its fields."""
TIMES = {Kind.SUCCESS: "last_success_at", Kind.FAILURE: "last_failure_at"}
Added = tuple[Kind, datetime, str | None]
"""An event as a tally counts it: its kind, when, and (a transition) its :func:`transition_key`."""


def transition_key(cause: str | None, to_state: str | None) -> str:
    """The key a transition is counted under in :attr:`Tally.transitions`:
    ``"<cause>:<to_state>"`` (e.g. ``"report:open"``)."""
    return f"{cause or ''}:{to_state or ''}"


@dataclass(frozen=True)
class Tally:
    """Counts and latest times of the events of one connection (one registration of it)."""

    successes: int = 0
    failures: int = 0
    last_success_at: datetime | None = None
    last_failure_at: datetime | None = None
    last_transition_at: datetime | None = None
    last_event_at: datetime | None = None
    transitions: Mapping[str, int] = field(default_factory=dict)
    """Transitions by :func:`transition_key` (cause and target state)."""

    def adding(self, kind: Kind, occurred_at: datetime, transition: str | None = None) -> Tally:
        """This tally with one more event of ``kind`` at ``occurred_at`` (latest times are the
        greatest seen, as ``MAX(occurred_at)`` over the log would be, whatever the order);
        ``transition`` is a transition's :func:`transition_key`."""
        changes: dict[str, Any] = {"last_event_at": _latest(self.last_event_at, occurred_at)}
        if kind is Kind.SUCCESS:
            changes["successes"] = self.successes + 1
        elif kind is Kind.FAILURE:
            changes["failures"] = self.failures + 1
        if kind in TIMES:
            changes[TIMES[kind]] = _latest(getattr(self, TIMES[kind]), occurred_at)
        elif kind is Kind.TRANSITION:
            changes["last_transition_at"] = _latest(self.last_transition_at, occurred_at)
            key = transition if transition is not None else transition_key(None, None)
            changes["transitions"] = {**self.transitions, key: self.transitions.get(key, 0) + 1}
        return replace(self, **changes)

    def adding_all(self, events: Iterable[Added]) -> Tally:
        """This tally with each ``(kind, occurred_at, transition key)`` of ``events`` added."""
        tally = self
        for kind, occurred_at, transition in events:
            tally = tally.adding(kind, occurred_at, transition)
        return tally

    def with_tail(self, successes: int, latest: datetime | None) -> Tally:
        """This tally with a tail of ``successes`` healthy successes, the latest at ``latest``
        (the events after ``tallied_through``, which are all healthy successes)."""
        if not successes or latest is None:
            return self
        counted, last_success_at = tail_counted(
            self.successes, self.last_success_at, successes, latest
        )
        return replace(
            self,
            successes=counted,
            last_success_at=last_success_at,
            last_event_at=_latest(self.last_event_at, latest),
        )

    def columns(self) -> dict[str, Any]:
        """The ``brama_connections`` column values of this tally."""
        values = {name: getattr(self, name) for name in COLUMNS}  # asdict() would deep-copy
        values["transitions"] = dict(self.transitions)
        return values

    def as_json(self) -> dict[str, Any]:
        """This tally as JSON (times in ISO 8601), for a pruning checkpoint."""
        return {
            name: value.isoformat() if isinstance(value, datetime) else value
            for name, value in self.columns().items()
        }

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> Tally:
        """The tally :meth:`as_json` wrote."""

        def time(name: str) -> datetime | None:
            value = document.get(name)
            return None if value is None else datetime.fromisoformat(value)

        return cls(
            successes=int(document["successes"]),
            failures=int(document["failures"]),
            last_success_at=time("last_success_at"),
            last_failure_at=time("last_failure_at"),
            last_transition_at=time("last_transition_at"),
            last_event_at=time("last_event_at"),
            transitions=transition_counts(document.get("transitions")),
        )

    @classmethod
    def of_row(cls, row: Any) -> Tally:
        """The tally a ``brama_connections`` row holds."""
        values = dict(zip(COLUMNS, _read_tally(row), strict=True))
        values["transitions"] = transition_counts(values["transitions"])
        return cls(**values)


_read_tally: Reader[tuple[Any, ...]] = Reader(COLUMNS, tuple)


def tail_counted(
    successes: int, last_success_at: datetime | None, tail: int, tail_latest: datetime | None
) -> tuple[int, datetime | None]:
    """``successes`` and the latest success's time with a tail of ``tail`` healthy successes,
    the latest at ``tail_latest``, counted (an empty tail changes nothing)."""
    if not tail or tail_latest is None:
        return successes, last_success_at
    return successes + tail, _latest(last_success_at, tail_latest)


def transition_counts(document: Any) -> dict[str, int]:
    """The counts of a stored ``transitions`` document (``NULL`` or absent, as written before
    revision 0006: none)."""
    return {str(key): int(value) for key, value in (document or {}).items()}


def _latest(current: datetime | None, candidate: datetime) -> datetime:
    return candidate if current is None or candidate > current else current
