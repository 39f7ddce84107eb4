"""Permit handles: one caller's admission to one call, settled by that call's report.

Plain :meth:`~brama_sql.Brama.available` and the reports identify the caller by its OS thread
(:meth:`~brama_sql.Brama.actor`). A :class:`Permit` from :meth:`~brama_sql.Brama.acquire` is a
caller of its own instead: it carries a random token, the probe permit it may claim belongs to
it alone, and only its own report settles that permit, whichever thread or task makes it.
"""

from __future__ import annotations

import secrets
import threading
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from brama_sql import validation
from brama_sql.circuit import Kind
from brama_sql.errors import InvalidArgumentError, describe
from brama_sql.records import Transition
from brama_sql.rows import Identity

if TYPE_CHECKING:
    from brama_sql.brama import Brama

ACTOR_LENGTH = 255
"""The length of the ``actor`` and ``holder`` columns: longer values keep their end."""


def new_token() -> str:
    """A permit's random token: 16 hex digits."""
    return secrets.token_hex(8)


def tagged(actor: str, token: str) -> str:
    """``actor:token``, keeping its last 255 characters (so the token always survives)."""
    return f"{actor}:{token}"[-ACTOR_LENGTH:]


class Permit:
    """An admission to one call to a connection, returned by :meth:`Brama.acquire` (and by
    ``with brama.guard(...) as permit``). Report the call's outcome through it, once:
    :meth:`success`, :meth:`failure`, or :meth:`release` for a call that counts as neither.

    The permit is a caller of its own, whatever thread or task holds it: its :attr:`holder`
    (``host:pid:instance:thread:token``, the thread that acquired it) holds the probe permit
    it claimed in a half-open circuit with ``half_open_max_calls`` set, and only its own report
    settles that permit, also from another thread. Two permits acquired in one thread are two
    callers.
    """

    def __init__(
        self, brama: Brama, identity: Identity, token: str, holder: str, probe: bool
    ) -> None:
        self._brama = brama
        self._identity = identity
        self.token = token
        """16 random hex digits naming this permit."""
        self.holder = holder
        """Who holds the probe permit: ``Brama.actor()`` of the acquiring thread, a colon and
        :attr:`token` (``brama_permits.holder``)."""
        self.probe = probe
        """Whether it holds a probe permit (a ``brama_permits`` row) of a half-open circuit
        with ``half_open_max_calls`` set; its report is then the probe that decides the
        circuit, unless the permit expired first (``probe_timeout``)."""
        self.started_at: datetime | None = None
        """When the guarded call started (set by a guard, from the ``Brama``'s clock): its
        report then records the call's duration."""
        self._settled = False
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        state = "settled" if self._settled else "open"
        kind = "probe " if self.probe else ""
        return f"<{kind}Permit for {describe(self.identifier, self.scope)}, {state}>"

    @property
    def identifier(self) -> str:
        """The connection's identifier."""
        return self._identity.identifier

    @property
    def scope(self) -> str | None:
        """The connection's scope (``None``: unscoped)."""
        return self._identity.scope

    @property
    def identity(self) -> Identity:
        """The connection's ``(identifier, scope)`` key."""
        return self._identity

    @property
    def settled(self) -> bool:
        """Whether the permit was reported on or released (it can be only once)."""
        return self._settled

    def actor(self) -> str:
        """What the events written through this permit record as ``actor`` when written from
        the current thread: :meth:`Brama.actor` of that thread, a colon and :attr:`token`.
        (Written from the acquiring thread, the same as :attr:`holder`.)"""
        return tagged(self._brama.actor(), self.token)

    def success(
        self, *, reason: str | None = None, duration: float | timedelta | None = None
    ) -> Transition | None:
        """Report the call as a success, as :meth:`Brama.success` does, settling the probe
        permit this handle holds. Returns the transition the report caused, else ``None``.
        ``duration`` left out is the time since :attr:`started_at` when a guard set it."""
        return self._report(Kind.SUCCESS, reason, duration)

    def failure(
        self, *, reason: str | None = None, duration: float | timedelta | None = None
    ) -> Transition | None:
        """Report the call as a failure, as :meth:`Brama.failure` does, settling the probe
        permit this handle holds. Returns the transition the report caused, else ``None``.
        ``duration`` as in :meth:`success`."""
        return self._report(Kind.FAILURE, reason, duration)

    def elapsed(self) -> float | None:
        """Seconds since :attr:`started_at` by the ``Brama``'s clock (``None`` when unset)."""
        if self.started_at is None:
            return None
        return max(0.0, (self._brama._now() - self.started_at).total_seconds())

    def release(self) -> None:
        """Hand the permit back without a report: the call counts as neither a success nor a
        failure. A probe permit is deleted, so another caller may probe at once; otherwise
        nothing is written."""
        self._settle()
        if self.probe:
            self._brama._release(self)

    def _report(
        self, kind: Kind, reason: str | None, duration: float | timedelta | None = None
    ) -> Transition | None:
        note = validation.reason(reason)  # bad input settles nothing
        took = validation.duration(duration)
        if took is None:
            took = self.elapsed()
        self._settle()
        return self._brama._report(kind, self._identity, note, permit=self, duration=took)

    def _settle(self) -> None:
        with self._lock:
            if self._settled:
                raise InvalidArgumentError(
                    f"this permit for {describe(self.identifier, self.scope)} was already "
                    "settled (a permit is reported on or released once; acquire a new one)",
                    argument="permit",
                )
            self._settled = True
