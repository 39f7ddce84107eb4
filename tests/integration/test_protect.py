"""``@brama.protect(...)``: functions, methods, static and class methods; ``failure_if``,
``fallback``, ``exclude``, ``register``; coroutine and generator functions refused at
decoration; on every dialect."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Iterator

import pytest

from brama_sql import (
    ArgumentTypeError,
    Brama,
    CircuitOpenError,
    InvalidArgumentError,
    Kind,
    State,
)


class Boom(Exception):
    """An error of the dependency."""


def reports(brama: Brama, identifier: str = "svc") -> list[tuple[str, str | None]]:
    return [
        (event.kind.value, event.reason)
        for event in brama.events(identifier)
        if event.kind in (Kind.SUCCESS, Kind.FAILURE)
    ]


def test_a_protected_function_reports_each_call(brama: Brama) -> None:
    brama.register("svc", scope="shop", failure_threshold=10)

    @brama.protect("svc", scope="shop")
    def charge(amount: int, *, currency: str = "EUR") -> str:
        """Charge a card."""
        if amount < 0:
            raise Boom(f"negative amount {amount}")
        return f"{amount} {currency}"

    assert charge(5) == "5 EUR"
    assert charge(7, currency="PLN") == "7 PLN"
    with pytest.raises(Boom, match="negative amount -1"):
        charge(-1)
    assert charge.__name__ == "charge" and charge.__doc__ == "Charge a card."
    assert charge.__wrapped__ is not None  # type: ignore[attr-defined]
    assert reports(brama) == [
        ("success", None),
        ("success", None),
        ("failure", "Boom: negative amount -1"),
    ]


def test_failure_if_reports_a_returned_value_as_a_failure(brama: Brama) -> None:
    brama.register("svc", failure_threshold=2)

    @brama.protect("svc", failure_if=lambda status: status >= 500)
    def fetch(status: int) -> int:
        return status

    assert fetch(200) == 200
    assert fetch(503) == 503, "the value is still returned"
    assert reports(brama) == [("success", None), ("failure", "failure_if matched 503")]
    assert fetch(502) == 502
    assert brama.status("svc").state is State.OPEN
    with pytest.raises(CircuitOpenError):
        fetch(200)


def test_a_failure_if_that_raises_counts_the_result_as_a_failure(brama: Brama) -> None:
    brama.register("svc")

    @brama.protect("svc", failure_if=lambda result: result["status"] >= 500)
    def fetch() -> dict[str, int]:
        return {}

    assert fetch() == {}
    assert reports(brama) == [("failure", "failure_if raised KeyError: 'status'")]


def test_fallback_is_called_with_the_arguments_when_the_circuit_refuses(brama: Brama) -> None:
    brama.register("svc", failure_threshold=1, expiry=3600)
    called: list[tuple[object, ...]] = []

    def cached_quote(symbol: str, *, currency: str = "EUR") -> str:
        called.append((symbol, currency))
        return f"cached {symbol} in {currency}"

    @brama.protect("svc", fallback=cached_quote)
    def quote(symbol: str, *, currency: str = "EUR") -> str:
        raise Boom("exchange down")

    with pytest.raises(Boom):
        quote("ACME")  # admitted: the fallback is not for the function's own errors
    assert called == []
    assert quote("ACME", currency="USD") == "cached ACME in USD"
    assert called == [("ACME", "USD")]
    assert reports(brama) == [("failure", "Boom: exchange down")], "a refusal reports nothing"


def test_without_fallback_a_refusal_raises(brama: Brama) -> None:
    brama.register("svc", failure_threshold=1)
    brama.failure("svc")
    calls = []

    @brama.protect("svc")
    def call() -> None:
        calls.append(1)

    with pytest.raises(CircuitOpenError) as caught:
        call()
    assert calls == [] and caught.value.status is not None


def test_methods_static_and_class_methods_are_protected(brama: Brama) -> None:
    brama.register("svc", failure_threshold=100)

    class Client:
        base = 10

        def __init__(self, offset: int) -> None:
            self.offset = offset

        @brama.protect("svc")
        def get(self, value: int) -> int:
            """Instance method."""
            return value + self.offset

        @staticmethod
        @brama.protect("svc")
        def ping(value: int) -> int:
            return value

        @brama.protect("svc")  # above the staticmethod: protect unwraps and re-wraps it
        @staticmethod
        def pong(value: int) -> int:
            return -value

        @classmethod
        @brama.protect("svc")
        def make(cls, value: int) -> int:
            return cls.base + value

        @brama.protect("svc", failure_if=lambda result: result < 0)
        @classmethod
        def check(cls, value: int) -> int:
            return value

    client = Client(1)
    assert client.get(2) == 3
    assert Client.get.__name__ == "get" and Client.get.__doc__ == "Instance method."
    assert Client.ping(4) == 4 and client.ping(4) == 4
    assert Client.pong(5) == -5 and client.pong(5) == -5
    assert Client.make(1) == 11 and client.make(1) == 11
    assert Client.check(-1) == -1
    status = brama.status("svc")
    assert (status.total_successes, status.total_failures) == (7, 1)


def test_fallback_of_a_method_gets_self(brama: Brama) -> None:
    brama.register("svc", failure_threshold=1)
    brama.failure("svc")

    class Client:
        name = "client"

        @brama.protect("svc", fallback=lambda self, value: f"{self.name} fallback {value}")
        def get(self, value: int) -> str:
            raise AssertionError("refused calls never run")

    assert Client().get(3) == "client fallback 3"


def test_exclude_and_register_in_the_decorator(brama: Brama) -> None:
    @brama.protect("fresh", register=True, failure_threshold=3, exclude=LookupError)
    def lookup(key: str) -> str:
        return {"a": "A"}[key]

    assert lookup("a") == "A"
    with pytest.raises(KeyError):
        lookup("b")
    assert brama.status("fresh").failure_threshold == 3
    assert reports(brama, "fresh") == [("success", None)]


def test_coroutine_and_generator_functions_are_refused_at_decoration(brama: Brama) -> None:
    protect = brama.protect("svc")

    async def coroutine() -> None:
        pass

    async def agen() -> AsyncIterator[int]:
        yield 1

    def gen() -> Iterator[int]:
        yield 1

    for function in (coroutine, agen, functools.partial(coroutine)):
        with pytest.raises(TypeError, match="coroutine function") as caught:
            protect(function)  # type: ignore[arg-type]
        assert isinstance(caught.value, ArgumentTypeError)
    with pytest.raises(ArgumentTypeError, match="generator function"):
        protect(gen)
    with pytest.raises(ArgumentTypeError, match="decorates a function"):
        protect(42)  # type: ignore[arg-type]
    assert brama.events() == []


def test_bad_options_raise_at_decoration(brama: Brama) -> None:
    async def async_fallback() -> None:
        pass

    with pytest.raises(ArgumentTypeError, match="failure_if must be callable"):
        brama.protect("svc", failure_if=True)  # type: ignore[arg-type]
    with pytest.raises(ArgumentTypeError, match="fallback must be callable"):
        brama.protect("svc", fallback="cached")  # type: ignore[arg-type]
    with pytest.raises(ArgumentTypeError, match="fallback must be a plain function"):
        brama.protect("svc", fallback=async_fallback)
    with pytest.raises(ArgumentTypeError, match="exclude"):
        brama.protect("svc", exclude=3)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="register=True"):
        brama.protect("svc", probe_timeout=3)
    assert brama.connections() == []
