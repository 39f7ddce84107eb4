"""The parts of guard, protect and listeners that need no database: reasons, exclusions,
argument checks at decoration, the announcement of written transitions, CircuitOpenError."""

from __future__ import annotations

import asyncio
import logging
import pickle
from datetime import datetime, timezone
from pathlib import Path

import pytest

from brama_sql import ArgumentTypeError, Brama, CircuitOpenError, Event, Kind, State
from brama_sql.circuit import Cause, Occurrence
from brama_sql.guard import Exclusion, reason_of, storable
from brama_sql.listeners import Listeners, Written
from brama_sql.rows import Identity
from brama_sql.schema import REASON_LENGTH

NOW = datetime(2031, 1, 1, tzinfo=timezone.utc)


def test_reason_of_names_the_type_and_the_message() -> None:
    assert reason_of(ValueError("bad value")) == "ValueError: bad value"
    assert reason_of(KeyError("k")) == "KeyError: 'k'"
    assert reason_of(RuntimeError()) == "RuntimeError"
    assert len(reason_of(OSError("é" * 3000))) == REASON_LENGTH

    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    assert reason_of(Unprintable()) == "Unprintable: <message cannot be printed>"
    assert storable("a\x00b\ud800") == "a\\x00b\\ud800"


def test_exclusion_by_types_and_by_predicate() -> None:
    assert not Exclusion(None).excludes(ValueError())
    by_type = Exclusion((KeyError, asyncio.CancelledError))
    assert by_type.excludes(KeyError()) and not by_type.excludes(IndexError())
    assert Exclusion(LookupError).excludes(KeyError())
    assert Exclusion({KeyError}).excludes(KeyError())
    by_predicate = Exclusion(lambda error: "ignore" in str(error))
    assert by_predicate.excludes(ValueError("please ignore"))
    assert not by_predicate.excludes(ValueError("count me"))
    for bad in ("KeyError", 1.5, [KeyError, 3], (object,), [dict]):
        with pytest.raises(ArgumentTypeError):
            Exclusion(bad)


def test_decoration_checks_need_no_database(tmp_path: Path) -> None:
    brama = Brama(f"sqlite:///{tmp_path / 'never-created.db'}")

    async def coroutine() -> None:
        pass

    with pytest.raises(TypeError):
        brama.protect("svc")(coroutine)
    with pytest.raises(ArgumentTypeError):
        brama.on_state_change(coroutine)  # type: ignore[arg-type]
    assert not (tmp_path / "never-created.db").exists()


def event(number: int) -> Event:
    return Event(
        id=number,
        identifier="svc",
        scope=None,
        kind=Kind.TRANSITION,
        occurred_at=NOW,
        from_state=State.CLOSED,
        to_state=State.OPEN,
        reason="failure threshold reached",
        failure_count=5,
        cause=Cause.REPORT,
    )


def test_listeners_are_called_in_order_and_a_raising_one_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    listeners = Listeners()
    called: list[tuple[str, int]] = []
    listeners.add(lambda e: called.append(("first", e.id)))

    def broken(e: Event) -> None:
        raise ValueError("bug")

    listeners.add(broken)
    last = listeners.add(lambda e: called.append(("last", e.id)))
    occurrence = Occurrence(
        Kind.TRANSITION, NOW, 5, State.CLOSED, State.OPEN, "failure threshold reached", Cause.REPORT
    )
    written = [
        Written(Identity("svc", None), occurrence, event(1)),
        Written(Identity("svc", None), occurrence, None),  # not read back: only logged
        Written(Identity("svc", None), occurrence, event(3)),
    ]
    with caplog.at_level(logging.INFO, logger="brama_sql"):
        listeners.announce(written)
    assert called == [("first", 1), ("last", 1), ("first", 3), ("last", 3)]
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert infos == ["circuit 'svc': closed -> open (report: failure threshold reached)"] * 3
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2 and all(r.exc_info for r in errors)
    last.remove()
    assert listeners.wanted() and len(listeners.registered) == 2


def test_circuit_open_error_pickles_with_its_fields() -> None:
    error = CircuitOpenError("svc", "pay", None, 12.5)
    copy = pickle.loads(pickle.dumps(error))
    fields = (copy.identifier, copy.scope, copy.status, copy.retry_after)
    assert fields == ("svc", "pay", None, 12.5)
    assert str(copy) == str(error)
    assert "retry after 12.5 s" in str(error)
