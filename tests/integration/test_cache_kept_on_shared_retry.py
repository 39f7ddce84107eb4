"""A success that moves from the shared lock to the exclusive one (nothing written yet) keeps
the availability cache's entries of the other connections."""

from __future__ import annotations

from collections.abc import Callable

from brama_sql import Brama


def test_a_success_written_exclusively_keeps_other_connections_cached(
    make_brama: Callable[..., Brama],
) -> None:
    brama = make_brama(availability_cache=60)
    brama.register("a")
    brama.register("b")
    brama.success("a")
    brama.success("b")
    assert brama.available("b")
    brama.failure("a")
    brama.success("a")  # resets a's failure count: the shared attempt gives way
    other = make_brama()
    other.open("b")
    assert brama.available("b"), "b's entry is within its 60 s: answered from memory"
