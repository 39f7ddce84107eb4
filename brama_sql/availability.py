"""The opt-in availability cache: ``available()`` answered from this process's memory for a
short window after this process last read or wrote the circuit.

Off by default (``Brama(availability_cache=None)``): every ``available()`` then reads the
database. With a window of ``w`` seconds, an answer may be up to ``w`` stale: a circuit another
process opened is still let through here for at most ``w`` after this process last looked, and
one another process closed is still refused for as long. Never across a transition this process
made: every write of this process (its reports, manual actions) leaves the circuit it committed
in the cache, and a write that failed or whose outcome is unknown drops the entry. The expiry
is applied to a cached open circuit as it would be to the row (an open circuit turns half-open
on time). Not cached: a half-open circuit with ``half_open_max_calls`` (each admission claims a
permit in the database), and a connection that was configured, unregistered or removed (the
entry is dropped). Pure bookkeeping: no I/O here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from brama_sql import circuit as machine
from brama_sql.circuit import Circuit, Settings, State
from brama_sql.rows import Identity


@dataclass(frozen=True)
class Seen:
    """A circuit as this process last read or wrote it, with its settings, at ``at``."""

    circuit: Circuit
    settings: Settings
    at: datetime


class AvailabilityCache:
    """The circuits this process saw, each answering ``available()`` for ``window``."""

    def __init__(self, window: timedelta, answers: bool = True) -> None:
        self.window = window
        self.answers = answers
        """Whether :meth:`answer` answers (batched reporting alone only asks :meth:`healthy`)."""
        self._seen: dict[Identity, Seen] = {}

    def healthy(self, identity: Identity, now: datetime, window: timedelta) -> bool:
        """Whether the circuit was seen closed, with no failures counted and no rate policy
        on, less than ``window`` before ``now`` (a success then changes nothing but the log;
        under a rate policy a success may bring the window to ``minimum_calls`` or be slow,
        and trip it)."""
        seen = self._seen.get(identity)
        if seen is None or not seen.at <= now < seen.at + window:
            return False
        circuit = seen.circuit
        return (
            circuit.state is State.CLOSED
            and circuit.failure_count == 0
            and not seen.settings.rate_policy
        )

    def answer(self, identity: Identity, now: datetime) -> bool | None:
        """Whether a call may go through, from what was seen less than ``window`` before
        ``now``; ``None`` when the database must be asked."""
        seen = self._seen.get(identity)
        if not self.answers or seen is None or not seen.at <= now < seen.at + self.window:
            return None
        circuit = machine.current(seen.circuit, seen.settings, now)
        if circuit.state is State.HALF_OPEN and seen.settings.permits_limited:
            return None
        return machine.is_available(circuit.state)

    def remember(
        self, identity: Identity, circuit: Circuit, settings: Settings, at: datetime
    ) -> None:
        """What a read found or a committed write left, at ``at``."""
        self._seen[identity] = Seen(circuit, settings, at)

    def forget(self, identity: Identity) -> None:
        """Drop what was seen of a connection: the database answers next."""
        self._seen.pop(identity, None)

    def clear(self) -> None:
        """Drop everything."""
        self._seen.clear()
