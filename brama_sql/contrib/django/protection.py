"""``@protect(...)`` for a Django project: the project's Brama, and 503 for a refused view."""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable
from typing import Any, TypeVar, cast

from django.http import HttpRequest, HttpResponse

from brama_sql.brama import Brama
from brama_sql.contrib.django.runtime import get_brama
from brama_sql.errors import ArgumentTypeError, CircuitOpenError

F = TypeVar("F", bound=Callable[..., Any])


def protect(identifier: str, *, scope: str | None = None, **options: Any) -> Callable[[F], F]:
    """A decorator that runs every call of a function in ``get_brama().protect(identifier,
    scope=scope, **options)`` (the same options: ``register``, ``exclude``, ``failure_if``,
    ``fallback``, ...), with the instance :func:`get_brama` gives at the time of the call
    (so the test database is used under the test runner).

    On a view (its first argument, or the first after ``self``, is an ``HttpRequest``), a
    refused call becomes an HTTP 503 response with a ``Retry-After`` header (whole seconds,
    rounded up, at least 1; 1 when the wait is unknown) instead of
    :class:`~brama_sql.CircuitOpenError`; elsewhere the error propagates, for the caller to
    handle. A coroutine or generator function is refused when decorated
    (:class:`~brama_sql.ArgumentTypeError`), as :meth:`Brama.protect
    <brama_sql.Brama.protect>` refuses it.
    """

    def decorate(function: F) -> F:
        if inspect.iscoroutinefunction(function) or inspect.isgeneratorfunction(function):
            raise ArgumentTypeError(
                f"protect() needs a plain function, not {function.__qualname__!r} (a "
                "coroutine or generator function)"
            )
        made: list[tuple[Brama, Callable[..., Any]]] = []

        def protected_for(brama: Brama) -> Callable[..., Any]:
            if made and made[0][0] is brama:
                return made[0][1]
            wrapped = brama.protect(identifier, scope=scope, **options)(function)
            made[:] = [(brama, wrapped)]
            return wrapped

        @functools.wraps(function)
        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return protected_for(get_brama())(*args, **kwargs)
            except CircuitOpenError as error:
                if any(isinstance(arg, HttpRequest) for arg in args[:2]):
                    return refused_response(error)
                raise

        return cast(F, call)

    return decorate


def refused_response(error: CircuitOpenError) -> HttpResponse:
    """The 503 response for a refused call, with ``Retry-After``: the wait in whole seconds,
    rounded up and at least 1, or 1 when the wait is unknown (half-open with every probe
    permit taken, forced open, the database away), as the Flask extension answers."""
    response = HttpResponse(
        f"Service unavailable: {error.identifier} is not available now.\n",
        status=503,
        content_type="text/plain; charset=utf-8",
    )
    wait = error.retry_after
    response["Retry-After"] = "1" if wait is None else str(max(1, math.ceil(wait)))
    return response
