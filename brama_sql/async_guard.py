"""Protecting coroutines: :meth:`AsyncBrama.guard` (``async with``), :meth:`AsyncBrama.protect`
(a decorator for coroutine functions) and :class:`AsyncPermit`, the asynchronous face of a
:class:`~brama_sql.Permit`.

They count exactly as their synchronous twins in :mod:`brama_sql.guard` do (whose checks and
reports they run through the greenlet bridge): a block that exits normally is a success, one
that raises an ``Exception`` a failure unless ``exclude`` says neither, and a ``BaseException``
that is not an ``Exception`` (``asyncio.CancelledError`` above all) counts as neither and hands
its probe permit back. Every entry and every call holds a permit of its own, so that tasks
sharing a thread are separate callers.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
from collections.abc import Awaitable, Callable
from datetime import timedelta
from types import TracebackType
from typing import Any, ParamSpec, TypeVar, cast

from brama_sql import bridge
from brama_sql.errors import ArgumentTypeError, CircuitOpenError, describe
from brama_sql.guard import Guard, _matched, _name
from brama_sql.permit import Permit
from brama_sql.records import Transition
from brama_sql.rows import Identity

P = ParamSpec("P")
R = TypeVar("R")

_entered: contextvars.ContextVar[tuple[tuple[AsyncGuard, AsyncPermit], ...]] = (
    contextvars.ContextVar("brama_sql_entered_guards", default=())
)
"""The permits of the guard blocks the current task is in, innermost last (each task has its
own: a context variable)."""


class AsyncPermit:
    """An admission to one call, returned by :meth:`AsyncBrama.acquire` and by ``async with
    brama.guard(...) as permit``: the coroutines :meth:`success`, :meth:`failure` and
    :meth:`release` settle it, once, as :class:`~brama_sql.Permit`'s methods do."""

    def __init__(self, permit: Permit) -> None:
        self.permit = permit
        """The synchronous :class:`~brama_sql.Permit` this one reports through."""

    def __repr__(self) -> str:
        return "<Async" + repr(self.permit).removeprefix("<")

    @property
    def identifier(self) -> str:
        """The connection's identifier."""
        return self.permit.identifier

    @property
    def scope(self) -> str | None:
        """The connection's scope (``None``: unscoped)."""
        return self.permit.scope

    @property
    def identity(self) -> Identity:
        """The connection's ``(identifier, scope)`` key."""
        return self.permit.identity

    @property
    def token(self) -> str:
        """16 random hex digits naming this permit."""
        return self.permit.token

    @property
    def holder(self) -> str:
        """Who holds its probe permit: the acquiring task's actor, a colon and :attr:`token`."""
        return self.permit.holder

    @property
    def probe(self) -> bool:
        """Whether it holds a probe permit of a half-open circuit (``half_open_max_calls``)."""
        return self.permit.probe

    @property
    def settled(self) -> bool:
        """Whether the permit was reported on or released (it can be only once)."""
        return self.permit.settled

    def actor(self) -> str:
        """What the events written through this permit record as ``actor``."""
        return self.permit.actor()

    def elapsed(self) -> float | None:
        """Seconds since the guarded call started (:meth:`Permit.elapsed`)."""
        return self.permit.elapsed()

    async def success(
        self, *, reason: str | None = None, duration: float | timedelta | None = None
    ) -> Transition | None:
        """Report the call as a success (:meth:`Permit.success`)."""
        return await bridge.run(self.permit.success, reason=reason, duration=duration)

    async def failure(
        self, *, reason: str | None = None, duration: float | timedelta | None = None
    ) -> Transition | None:
        """Report the call as a failure (:meth:`Permit.failure`)."""
        return await bridge.run(self.permit.failure, reason=reason, duration=duration)

    async def release(self) -> None:
        """Hand the permit back without a report (:meth:`Permit.release`)."""
        await bridge.run(self.permit.release)


class AsyncGuard:
    """An asynchronous context manager that protects the call in its block; made by
    :meth:`AsyncBrama.guard`. One guard may be entered by many tasks at once and nested; each
    entry is a caller of its own."""

    def __init__(self, guard: Guard) -> None:
        self.guard = guard
        """The synchronous :class:`~brama_sql.Guard` whose admission and reports it runs."""
        self._open: list[AsyncPermit] = []
        """The permits of the blocks of this guard not yet exited, in any task."""

    def __repr__(self) -> str:
        return f"<AsyncGuard of {describe(self.identifier, self.scope)}>"

    @property
    def identifier(self) -> str:
        """The connection's identifier."""
        return self.guard.identifier

    @property
    def scope(self) -> str | None:
        """The connection's scope (``None``: unscoped)."""
        return self.guard.scope

    async def admit(self) -> AsyncPermit:
        """A permit for one call, or :class:`CircuitOpenError` (:meth:`Guard.admit`)."""
        permit = await bridge.admit(self.guard.admit)
        assert permit is not None  # admit() raises CircuitOpenError instead
        return AsyncPermit(permit)

    async def settle(self, permit: AsyncPermit, error: BaseException | None) -> None:
        """Report the outcome of the call ``permit`` admitted (:meth:`Guard.settle`)."""
        if not permit.settled:
            await bridge.run(self.guard.settle, permit.permit, error)

    async def __aenter__(self) -> AsyncPermit:
        permit = await self.admit()
        _entered.set((*_entered.get(), (self, permit)))
        self._open.append(permit)
        return permit

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        entered = _entered.get()
        mine = [i for i, (guard, _) in enumerate(entered) if guard is self]
        if mine:
            permit = entered[mine[-1]][1]
            _entered.set(entered[: mine[-1]] + entered[mine[-1] + 1 :])
        elif len(self._open) == 1:
            # Exited in another task than the one that entered it (an AsyncExitStack closed
            # elsewhere): the guard's only open block is the one ending.
            permit = self._open[0]
        else:
            raise RuntimeError(
                f"{self!r} exited in a task that did not enter it while {len(self._open)} of "
                "its blocks are open: exit a guard in the task that entered it"
            )
        self._open.remove(permit)
        await self.settle(permit, exc)
        # Returning None lets the caller's exception propagate as it was raised.


def protect_coroutines(
    guard: AsyncGuard,
    failure_if: Callable[[Any], object] | None,
    fallback: Callable[..., Any] | None,
) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
    """The decorator of :meth:`AsyncBrama.protect`: each call of the decorated coroutine
    function runs in ``guard``; ``failure_if(result)`` true reports a returned value as a
    failure (the value is returned all the same); when the circuit refuses,
    ``fallback(*args, **kwargs)`` is called (and awaited when it returns an awaitable) and its
    result returned, if given."""

    def decorate(function: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        if isinstance(function, (staticmethod, classmethod)):
            wrapped = decorate(function.__func__)
            return cast(Callable[P, Awaitable[R]], type(function)(wrapped))
        if not callable(function):
            raise ArgumentTypeError(
                f"protect() decorates a coroutine function, not {type(function).__name__}"
            )
        if inspect.isasyncgenfunction(function):
            raise ArgumentTypeError(
                f"{_name(function)} is an asynchronous generator function: protect() would "
                "only see the generator being created; use `async with brama.guard(...)` in it"
            )
        if not inspect.iscoroutinefunction(function):
            raise ArgumentTypeError(
                f"{_name(function)} is not a coroutine function: AsyncBrama.protect() protects "
                "`async def` functions (use Brama.protect() or a guard for plain ones)"
            )

        @functools.wraps(function)
        async def protected(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                permit = await guard.admit()
            except CircuitOpenError:
                if fallback is None:
                    raise
                answer = fallback(*args, **kwargs)
                if inspect.isawaitable(answer):
                    answer = await answer
                return cast(R, answer)
            try:
                result = await function(*args, **kwargs)
            except BaseException as error:
                await guard.settle(permit, error)
                raise
            if failure_if is not None:
                reason = _matched(failure_if, result)
                if reason is not None:
                    await permit.failure(reason=reason)
                    return result
            await guard.settle(permit, None)
            return result

        return protected

    return decorate
