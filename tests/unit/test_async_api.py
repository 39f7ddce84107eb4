"""``AsyncBrama`` offers every public method of ``Brama`` with the same parameters: the methods
that touch the database as coroutines, the others (``actor``, ``declare``, ``guard``,
``protect``, ``on_state_change``, ``start_cleaner``) as plain methods."""

from __future__ import annotations

import inspect

import pytest

from brama_sql import AsyncBrama, AsyncGuard, AsyncPermit, Brama, Guard, Permit

PLAIN = {
    "actor",
    "declare",
    "guard",
    "protect",
    "on_state_change",
    "start_cleaner",
    "stream_events",
}
"""The methods that do not touch the database (or return an object that does later:
``stream_events`` returns an asynchronous iterator)."""
DIFFERENT_TYPES = {"migrate"}
"""``migrate(connection)`` takes an ``AsyncConnection``: same name and default, another type."""


def public_methods(cls: type) -> dict[str, object]:
    return {
        name: member
        for name, member in inspect.getmembers(cls, inspect.isfunction)
        if not name.startswith("_")
    }


@pytest.mark.parametrize("name", sorted(public_methods(Brama)))
def test_every_brama_method_has_its_async_twin(name: str) -> None:
    sync = public_methods(Brama)[name]
    twin = public_methods(AsyncBrama).get(name)
    assert twin is not None, f"AsyncBrama.{name}() is missing"
    assert inspect.iscoroutinefunction(twin) is (name not in PLAIN)
    sync_parameters = inspect.signature(sync).parameters  # type: ignore[arg-type]
    async_parameters = inspect.signature(twin).parameters  # type: ignore[arg-type]
    assert list(async_parameters) == list(sync_parameters)
    for parameter, expected in sync_parameters.items():
        got = async_parameters[parameter]
        assert (got.kind, got.default) == (expected.kind, expected.default)
        if name not in DIFFERENT_TYPES:
            assert got.annotation == expected.annotation, (name, parameter)


def test_the_constructors_take_the_same_options() -> None:
    sync = inspect.signature(Brama.__init__).parameters
    asynchronous = inspect.signature(AsyncBrama.__init__).parameters
    assert list(asynchronous) == list(sync)
    for name, parameter in sync.items():
        if name != "url":
            assert asynchronous[name].default == parameter.default, name


@pytest.mark.parametrize(
    ("sync", "twin"), [(Permit, AsyncPermit), (Guard, AsyncGuard)], ids=["Permit", "Guard"]
)
def test_permits_and_guards_have_their_async_twins(sync: type, twin: type) -> None:
    missing = set(public_methods(sync)) - set(public_methods(twin))
    properties = {name for name, _ in inspect.getmembers(sync, lambda m: isinstance(m, property))}
    assert not missing
    assert properties <= {
        name for name, _ in inspect.getmembers(twin, lambda m: isinstance(m, property))
    }
