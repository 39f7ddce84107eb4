"""A connection is (identifier, scope), compared exactly on every dialect; scope is keyword-only."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from brama_sql import AlreadyRegisteredError, Brama, State

LogCheck = Callable[..., Any]

LOOKALIKES = [
    ("DB", "db"),
    ("é", "e"),
    ("db", "db "),
    ("\u00e9", "e\u0301"),  # composed and decomposed é
    ("straße", "strasse"),
    ("ǅ", "Ǆ"),
    ("\uff41", "a"),  # fullwidth a
]
"""Pairs a case-, accent- or pad-insensitive collation (MariaDB's defaults) would merge."""


def test_unscoped_and_scoped_connections_are_independent(
    brama: Brama, assert_log_explains_row: LogCheck
) -> None:
    brama.register("db", failure_threshold=1)
    brama.register("db", scope="a", failure_threshold=1)
    brama.register("db", scope="b", failure_threshold=1)
    brama.failure("db", scope="a")
    brama.success("db", scope="b")
    assert brama.status("db").state is State.UNKNOWN
    assert brama.status("db", scope="a").state is State.OPEN
    assert brama.status("db", scope="b").state is State.CLOSED
    assert brama.available("db") is True
    assert brama.available("db", scope="a") is False
    assert brama.available("db", scope="b") is True
    assert brama.status("db", scope="a").scope == "a"
    assert brama.status("db").scope is None

    assert brama.unregister("db", scope="a") is True
    assert brama.status("db").state is State.UNKNOWN
    assert brama.status("db", scope="b").state is State.CLOSED
    with pytest.raises(AlreadyRegisteredError):
        brama.register("db", scope="b")
    for scope in (None, "a", "b"):
        assert [e.scope for e in brama.events("db", scope=scope)] == [scope] * len(
            brama.events("db", scope=scope)
        )
    assert_log_explains_row(brama, "db")
    assert_log_explains_row(brama, "db", "b")


def test_a_scope_name_is_not_an_identifier_prefix(brama: Brama) -> None:
    """("b", scope "a") and ("a:b", None) are different (the original's key string merged them)."""
    brama.register("b", scope="a", failure_threshold=1)
    brama.register("a:b")
    brama.failure("b", scope="a")
    assert brama.status("a:b").state is State.UNKNOWN
    assert brama.status("b", scope="a").state is State.OPEN


@pytest.mark.parametrize(("first", "second"), LOOKALIKES)
def test_lookalike_identifiers_are_different_connections(
    brama: Brama, first: str, second: str, assert_log_explains_row: LogCheck
) -> None:
    brama.register(first, failure_threshold=1, metadata={"name": first})
    brama.register(second, failure_threshold=1, metadata={"name": second})
    brama.failure(first)
    assert brama.status(first).state is State.OPEN
    assert brama.status(second).state is State.UNKNOWN
    assert brama.status(first).metadata == {"name": first}
    assert brama.status(second).metadata == {"name": second}
    assert brama.status(first).identifier == first
    assert brama.status(second).identifier == second
    assert brama.available(second) is True
    assert {s.identifier for s in brama.connections()} == {first, second}
    assert {e.identifier for e in brama.events(first)} == {first}
    assert {e.identifier for e in brama.events(second)} == {second}
    assert len(brama.events(second)) == 1
    assert brama.unregister(second) is True
    assert brama.status(first).state is State.OPEN
    assert brama.unregister(second) is False
    assert_log_explains_row(brama, first)


@pytest.mark.parametrize(("first", "second"), LOOKALIKES)
def test_lookalike_scopes_are_different_connections(
    brama: Brama, first: str, second: str, assert_log_explains_row: LogCheck
) -> None:
    brama.register("db", scope=first, failure_threshold=1)
    brama.register("db", scope=second, failure_threshold=1)
    brama.failure("db", scope=second)
    assert brama.status("db", scope=first).state is State.UNKNOWN
    assert brama.status("db", scope=second).state is State.OPEN
    assert [s.scope for s in brama.connections(scope=first)] == [first]
    assert [s.scope for s in brama.connections(scope=second)] == [second]
    assert {e.scope for e in brama.events(scope=first)} == {first}
    assert {e.scope for e in brama.events("db", scope=second)} == {second}
    assert_log_explains_row(brama, "db", first)
    assert_log_explains_row(brama, "db", second)


def test_longest_identifiers_and_scopes_in_any_script(
    brama: Brama, assert_log_explains_row: LogCheck
) -> None:
    identifier = "é" * 254 + "a"
    twin = "é" * 254 + "b"
    scope = "🚀" * 255
    brama.register(identifier, scope=scope)
    brama.register(twin, scope=scope)
    brama.failure(identifier, scope=scope)
    status = brama.status(identifier, scope=scope)
    assert (status.identifier, status.scope, status.total_failures) == (identifier, scope, 1)
    assert brama.status(twin, scope=scope).total_failures == 0
    [event] = brama.events(twin, scope=scope)
    assert (event.identifier, event.scope) == (twin, scope)
    assert_log_explains_row(brama, identifier, scope)


SCOPED_CALLS: dict[str, Callable[[Brama], Any]] = {
    "register": lambda brama: brama.register("db", "s"),
    "available": lambda brama: brama.available("db", "s"),
    "success": lambda brama: brama.success("db", "s"),
    "failure": lambda brama: brama.failure("db", "s"),
    "status": lambda brama: brama.status("db", "s"),
    "unregister": lambda brama: brama.unregister("db", "s"),
    "open": lambda brama: brama.open("db", "s"),
    "close": lambda brama: brama.close("db", "s"),
    "reset": lambda brama: brama.reset("db", "s"),
    "events": lambda brama: brama.events("db", "s"),
    "connections": lambda brama: brama.connections("s"),
}


@pytest.mark.parametrize("call", sorted(SCOPED_CALLS))
def test_scope_is_keyword_only(
    brama: Brama, call: str, row_counts: Callable[[Brama], tuple[int, int]]
) -> None:
    brama.register("db", scope="s")
    counts = row_counts(brama)
    with pytest.raises(TypeError, match="positional"):
        SCOPED_CALLS[call](brama)
    assert row_counts(brama) == counts
    assert brama.status("db", scope="s").state is State.UNKNOWN
