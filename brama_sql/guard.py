"""Protecting calls: :meth:`Brama.guard` (a context manager) and :meth:`Brama.protect` (a
decorator) ask for admission, run the caller's code, and report its outcome through a
:class:`~brama_sql.permit.Permit`, so a caller cannot forget a report or settle another
caller's probe permit.

What counts: a block that exits normally is a success; one that raises an :class:`Exception`
is a failure (reason ``"<ExceptionType>: <message>"``), unless ``exclude`` says the exception
counts as neither; a :class:`BaseException` that is not an :class:`Exception`
(``KeyboardInterrupt``, ``SystemExit``, ``GeneratorExit``, ``asyncio.CancelledError``) counts
as neither. A call that counts as neither hands its probe permit back. The caller's exception
always propagates unchanged.
"""

from __future__ import annotations

import functools
import inspect
import logging
import reprlib
import threading
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast

from brama_sql.errors import (
    ArgumentTypeError,
    BramaDatabaseError,
    BramaError,
    CircuitOpenError,
    NotRegisteredError,
    describe,
)
from brama_sql.options import Registration
from brama_sql.permit import Permit, new_token, tagged
from brama_sql.rows import Identity
from brama_sql.schema import REASON_LENGTH

if TYPE_CHECKING:
    from brama_sql.brama import Brama

logger = logging.getLogger("brama_sql")

P = ParamSpec("P")
R = TypeVar("R")

Exclude = type[BaseException] | Iterable[type[BaseException]] | Callable[[BaseException], bool]
"""What ``exclude`` accepts: an exception type, several (a tuple, list or set), or a predicate
``exception -> bool``."""


class Exclusion:
    """The exceptions that count as neither success nor failure (``exclude``), checked."""

    def __init__(self, exclude: object) -> None:
        self.types: tuple[type[BaseException], ...] = ()
        self.predicate: Callable[[BaseException], object] | None = None
        if exclude is None:
            return
        if isinstance(exclude, type):
            self.types = (_exception_type(exclude),)
        elif isinstance(exclude, (tuple, list, set, frozenset)):
            self.types = tuple(_exception_type(item) for item in exclude)
        elif callable(exclude):
            if inspect.iscoroutinefunction(exclude):
                raise ArgumentTypeError(
                    "exclude must be a plain predicate, not a coroutine function"
                )
            self.predicate = exclude
        else:
            raise ArgumentTypeError(
                "exclude must be an exception type, a tuple of them or a predicate "
                f"(exception -> bool), not {type(exclude).__name__}"
            )

    def excludes(self, error: BaseException) -> bool:
        """Whether ``error`` counts as neither success nor failure. A predicate that raises is
        logged, and the exception then counts (as a failure)."""
        if isinstance(error, self.types):
            return True
        if self.predicate is None:
            return False
        try:
            return bool(self.predicate(error))
        except Exception:
            logger.exception(
                "exclude predicate %r raised on %s; the exception counts as a failure",
                self.predicate,
                type(error).__name__,
            )
            return False


def _exception_type(value: object) -> type[BaseException]:
    if isinstance(value, type) and issubclass(value, BaseException):
        return value
    shown = value.__name__ if isinstance(value, type) else type(value).__name__
    raise ArgumentTypeError(f"exclude must name exception types, not {shown}")


def checked_callable(value: object, name: str) -> Any:
    """``None`` or a plain (not coroutine) callable, else :class:`ArgumentTypeError`."""
    if value is None:
        return None
    if not callable(value):
        raise ArgumentTypeError(f"{name} must be callable, not {type(value).__name__}")
    if inspect.iscoroutinefunction(value) or inspect.isasyncgenfunction(value):
        raise ArgumentTypeError(f"{name} must be a plain function, not a coroutine function")
    return value


def reason_of(error: BaseException) -> str:
    """``"<ExceptionType>: <message>"`` (just the type's name for an empty message), made
    storable and cut to the reason column's length."""
    name = type(error).__name__
    try:
        message = str(error)
    except Exception:
        message = "<message cannot be printed>"
    return storable(f"{name}: {message}" if message else name)


def storable(text: str) -> str:
    """``text`` with NUL characters and lone surrogates escaped, cut to the reason column's
    length (:data:`~brama_sql.schema.REASON_LENGTH` characters)."""
    text = text.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")
    return text[:REASON_LENGTH]


class FirstUses:
    """The registrations ``register=True`` guards of one :class:`Brama` have made sure of, so
    that each registers (or compares its options with the stored ones) once per process."""

    def __init__(self) -> None:
        self._seen: dict[Identity, list[Registration]] = {}
        self._lock = threading.Lock()

    def seen(self, identity: Identity, registration: Registration) -> bool:
        """Whether ``registration`` of ``identity`` was made sure of already."""
        return registration in self._seen.get(identity, ())

    def note(self, identity: Identity, registration: Registration) -> None:
        """Remember that ``registration`` of ``identity`` was made sure of."""
        with self._lock:
            known = self._seen.setdefault(identity, [])
            if registration not in known:
                known.append(registration)


class Guard:
    """A context manager that protects the call in its block; made by :meth:`Brama.guard`.

    On entry it asks for admission (:meth:`Brama.acquire`) and returns the
    :class:`~brama_sql.permit.Permit`; when refused it raises
    :class:`~brama_sql.errors.CircuitOpenError` and the block does not run. On exit it
    reports through the permit: a success, a failure, or neither (see the module). A block
    that reports through the permit itself is not reported again. One guard may be entered by
    many threads at once and nested; each entry is a caller of its own.
    """

    def __init__(
        self,
        brama: Brama,
        identity: Identity,
        exclusion: Exclusion,
        registration: Registration | None,
    ) -> None:
        self._brama = brama
        self._identity = identity
        self._exclusion = exclusion
        self._registration = registration
        self._entered = threading.local()

    def __repr__(self) -> str:
        return f"<Guard of {describe(self.identifier, self.scope)}>"

    @property
    def identifier(self) -> str:
        """The connection's identifier."""
        return self._identity.identifier

    @property
    def scope(self) -> str | None:
        """The connection's scope (``None``: unscoped)."""
        return self._identity.scope

    def admit(self) -> Permit:
        """A permit for one call, or :class:`CircuitOpenError`; registers the connection
        first with ``register=True`` (once per process, and again if it was removed)."""
        brama, identity, registration = self._brama, self._identity, self._registration
        if registration is not None:
            try:
                brama._ensure_registered(identity, registration)
            except BramaDatabaseError as error:
                if brama.on_db_error == "raise":
                    raise
                # The admission below answers by the policy; the next call registers.
                logger.warning("guard of %s: registration failed: %s", identity.identifier, error)
        for attempt in range(2):
            permit, failure = brama._acquire(identity)
            if permit is not None:
                permit.started_at = brama._now()
                return permit
            if failure is not None:  # on_db_error="deny": refused without a status
                raise CircuitOpenError(identity.identifier, identity.scope, None, None) from failure
            try:
                refusal = brama._refusal(identity)
            except NotRegisteredError:
                if registration is None or attempt:
                    raise
                try:
                    brama._ensure_registered(identity, registration, again=True)
                except BramaDatabaseError as error:
                    if brama.on_db_error == "raise":
                        raise
                    if brama.on_db_error == "allow":  # fail open, as available() would
                        token = new_token()
                        return Permit(brama, identity, token, tagged(brama.actor(), token), False)
                    raise CircuitOpenError(
                        identity.identifier, identity.scope, None, None
                    ) from error
                continue
            except BramaDatabaseError as error:
                if brama.on_db_error == "raise":
                    raise
                raise CircuitOpenError(identity.identifier, identity.scope, None, None) from error
            raise CircuitOpenError(
                identity.identifier, identity.scope, refusal.status, refusal.retry_after
            )
        raise AssertionError("unreachable")  # pragma: no cover

    def settle(self, permit: Permit, error: BaseException | None) -> None:
        """Report the outcome of the call ``permit`` admitted: ``error`` is what it raised, or
        ``None``. Does nothing when the permit was settled already (the block reported).

        A failing success report raises (as :meth:`Brama.success` would); a failing failure
        report or release is logged, so that the caller's own exception propagates."""
        if permit.settled:
            return
        if error is None:
            permit.success()
            return
        counts = isinstance(error, Exception) and not self._exclusion.excludes(error)
        try:
            if counts:
                permit.failure(reason=reason_of(error))
            else:
                permit.release()
        except BramaError as report_error:
            logger.warning(
                "guard of %s: the %s after %s failed, the call's exception propagates: %s",
                describe(permit.identifier, permit.scope),
                "failure report" if counts else "permit release",
                type(error).__name__,
                report_error,
            )

    def __enter__(self) -> Permit:
        permit = self.admit()
        stack: list[Permit] | None = getattr(self._entered, "stack", None)
        if stack is None:
            stack = self._entered.stack = []
        stack.append(permit)
        return permit

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        permit = self._entered.stack.pop()
        self.settle(permit, exc)
        # Returning None lets the caller's exception propagate as it was raised.


def protect(
    guard: Guard,
    failure_if: Callable[[Any], object] | None,
    fallback: Callable[..., Any] | None,
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """The decorator of :meth:`Brama.protect`: each call of the decorated function runs in
    ``guard``; ``failure_if(result)`` true reports a returned value as a failure (the value
    is returned all the same); when the circuit refuses, ``fallback(*args, **kwargs)`` is
    called with the call's arguments and its result returned, if given."""

    def decorate(function: Callable[P, R]) -> Callable[P, R]:
        if isinstance(function, (staticmethod, classmethod)):
            wrapped = decorate(function.__func__)
            return cast(Callable[P, R], type(function)(wrapped))
        if not callable(function):
            raise ArgumentTypeError(
                f"protect() decorates a function, not {type(function).__name__}"
            )
        if inspect.iscoroutinefunction(function) or inspect.isasyncgenfunction(function):
            raise ArgumentTypeError(
                f"{_name(function)} is a coroutine function: Brama.protect() protects plain "
                "functions (it would only see the coroutine being created, not awaited)"
            )
        if inspect.isgeneratorfunction(function):
            raise ArgumentTypeError(
                f"{_name(function)} is a generator function: protect() would only see the "
                "generator being created; use `with brama.guard(...)` inside it"
            )

        @functools.wraps(function)
        def protected(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                permit = guard.admit()
            except CircuitOpenError:
                if fallback is None:
                    raise
                return cast(R, fallback(*args, **kwargs))
            try:
                result = function(*args, **kwargs)
            except BaseException as error:
                guard.settle(permit, error)
                raise
            if failure_if is not None:
                reason = _matched(failure_if, result)
                if reason is not None:
                    permit.failure(reason=reason)
                    return result
            guard.settle(permit, None)
            return result

        return protected

    return decorate


def _matched(failure_if: Callable[[Any], object], result: object) -> str | None:
    """The failure reason when ``failure_if(result)`` is true, else ``None``. A predicate that
    raises is logged, and the result then counts as a failure."""
    try:
        matched = bool(failure_if(result))
    except Exception as error:
        logger.exception("failure_if %r raised; the result counts as a failure", failure_if)
        return storable(f"failure_if raised {reason_of(error)}")
    return storable(f"failure_if matched {reprlib.repr(result)}") if matched else None


def _name(function: object) -> str:
    return getattr(function, "__qualname__", None) or repr(function)
