"""State-change listeners: callbacks told of every transition a :class:`~brama_sql.Brama`
writes, once its transaction has committed, and the INFO line logged for each.

A transition is announced only by the process, and the :class:`~brama_sql.Brama` object, whose
transaction wrote it, so a fleet announces each transition exactly once in total. The store
hands over what a committed transaction wrote (:meth:`Listeners.announce`); nothing here
touches the database.
"""

from __future__ import annotations

import functools
import inspect
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from brama_sql.circuit import Occurrence
from brama_sql.errors import ArgumentTypeError, describe
from brama_sql.records import Event
from brama_sql.rows import Identity

logger = logging.getLogger("brama_sql")

Callback = Callable[[Event], object]
"""A state-change listener: called with the ``transition`` :class:`~brama_sql.Event`."""


@dataclass(frozen=True)
class Written:
    """A transition a committed transaction wrote: its connection, what the state machine
    asked to log, and the logged :class:`Event` (read back in the transaction when listeners
    were registered, else ``None``)."""

    identity: Identity
    occurrence: Occurrence
    event: Event | None


class Listener:
    """A registered state-change listener, returned by :meth:`Brama.on_state_change`.

    Calling it calls the callback (so ``@brama.on_state_change`` leaves the decorated name
    usable as the function, with its name and docstring); :meth:`remove` unregisters it.
    """

    def __init__(self, callback: Callback, listeners: Listeners) -> None:
        self.callback = callback
        """The function given to :meth:`Brama.on_state_change`."""
        self._listeners = listeners
        functools.update_wrapper(self, callback)

    def __call__(self, event: Event) -> object:
        return self.callback(event)

    def __repr__(self) -> str:
        return f"<Listener {self.callback!r}>"

    @property
    def active(self) -> bool:
        """Whether the listener is registered (until :meth:`remove`)."""
        return self in self._listeners.registered

    def remove(self) -> None:
        """Stop calling the callback. Calling it again does nothing. A transition being
        announced in another thread at that moment may still reach it."""
        self._listeners.remove(self)


class Listeners:
    """The state-change listeners of one :class:`~brama_sql.Brama`."""

    def __init__(self) -> None:
        self.registered: tuple[Listener, ...] = ()
        """Every listener, in the order added (replaced as a whole on each change, so an
        announcement iterates over a snapshot without a lock)."""
        self._lock = threading.Lock()

    def add(self, callback: object) -> Listener:
        """Register ``callback``; it is called with each announced transition's event."""
        if not callable(callback):
            raise ArgumentTypeError(
                f"a state-change listener must be callable, not {type(callback).__name__}"
            )
        if inspect.iscoroutinefunction(callback) or inspect.isasyncgenfunction(callback):
            raise ArgumentTypeError(
                "a state-change listener must be a plain function: Brama calls it "
                "synchronously, and a coroutine function's result would never be awaited"
            )
        listener = Listener(callback, self)
        with self._lock:
            self.registered = (*self.registered, listener)
        return listener

    def remove(self, listener: Listener) -> None:
        """Unregister ``listener`` (nothing happens when it is not registered)."""
        with self._lock:
            self.registered = tuple(known for known in self.registered if known is not listener)

    def wanted(self) -> bool:
        """Whether any listener is registered, so the written events are worth reading back."""
        return bool(self.registered)

    def announce(self, written: Sequence[Written]) -> None:
        """Log one INFO line per transition, then call every listener with each transition's
        event, in the order they were written. A listener that raises is logged with its
        traceback; the others are called all the same, and the caller never sees the error."""
        for transition in written:
            _log(transition)
            if transition.event is None:
                continue
            for listener in self.registered:
                try:
                    listener(transition.event)
                except Exception:
                    logger.exception(
                        "state-change listener %r raised on event %d; ignored",
                        listener.callback,
                        transition.event.id,
                    )


def _log(transition: Written) -> None:
    occurrence = transition.occurrence
    identity = transition.identity
    arguments: tuple[Any, ...] = (
        describe(identity.identifier, identity.scope),
        occurrence.from_state,
        occurrence.to_state,
        occurrence.cause,
        occurrence.reason,
    )
    logger.info("circuit %s: %s -> %s (%s: %s)", *arguments)
