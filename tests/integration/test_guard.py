"""``with brama.guard(...)``: admission, what counts as a success or a failure, the caller's
exception re-raised unchanged, exclusions, ``BaseException``, refusals with their status and
``retry_after``, and ``register=True``; on every dialect."""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timezone

import pytest
from freezegun import freeze_time
from freezegun.api import FrozenDateTimeFactory
from sqlalchemy import func, select

from brama_sql import (
    ArgumentTypeError,
    Brama,
    BramaDatabaseError,
    BramaError,
    CircuitOpenError,
    InvalidArgumentError,
    Kind,
    NotRegisteredError,
    State,
)
from brama_sql.replay import verify
from brama_sql.schema import REASON_LENGTH, permits

T0 = datetime(2031, 5, 6, 7, 8, 9, 250_000, tzinfo=timezone.utc)
MakeBrama = Callable[..., Brama]


class Boom(Exception):
    """An error of the dependency."""


class Ignored(Exception):
    """An error that says nothing about the dependency's health."""


@pytest.fixture
def clock() -> Iterator[FrozenDateTimeFactory]:
    with freeze_time(T0) as frozen:
        yield frozen


def reports(brama: Brama, identifier: str = "svc") -> list[tuple[str, str | None]]:
    return [
        (event.kind.value, event.reason)
        for event in brama.events(identifier)
        if event.kind in (Kind.SUCCESS, Kind.FAILURE)
    ]


def permit_count(brama: Brama) -> int:
    with brama.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(permits)).scalar_one()


def raise_boom() -> None:
    raise Boom("card declined")


def test_a_block_that_exits_normally_is_a_success(brama: Brama) -> None:
    brama.register("svc", scope="payments")
    ran = []
    with brama.guard("svc", scope="payments") as permit:
        ran.append(permit)
    assert len(ran) == 1 and ran[0].settled
    assert [(e.kind, e.reason) for e in brama.events("svc")][1:] == [
        (Kind.SUCCESS, None),
        (Kind.TRANSITION, "first success"),
    ]
    assert brama.status("svc", scope="payments").total_successes == 1


def test_a_block_that_raises_is_a_failure_and_the_same_exception_propagates(
    brama: Brama,
) -> None:
    brama.register("svc")
    with pytest.raises(Boom) as caught, brama.guard("svc"):
        raise_boom()
    assert reports(brama) == [("failure", "Boom: card declined")]
    assert caught.value.__traceback__ is not None
    innermost = caught.traceback[-1]
    assert innermost.name == "raise_boom", "the traceback still ends where it was raised"

    error = Boom("kept")
    try:
        with brama.guard("svc"):
            raise error
    except Boom as propagated:
        assert propagated is error
        assert propagated.__context__ is None and propagated.__cause__ is None
    status = brama.status("svc")
    assert status.total_failures == 2 and status.failure_count == 2
    verify(brama.engine, "svc")


def test_the_reason_is_cut_to_the_column_and_made_storable(brama: Brama) -> None:
    brama.register("svc", failure_threshold=100)
    with pytest.raises(ValueError), brama.guard("svc"):
        raise ValueError("x" * 5000)
    with pytest.raises(KeyError), brama.guard("svc"):
        raise KeyError()
    with pytest.raises(RuntimeError), brama.guard("svc"):
        raise RuntimeError("nul \x00 and lone \udc80 surrogate")
    long_reason, empty, odd = (reason for _, reason in reports(brama))
    assert long_reason is not None and len(long_reason) == REASON_LENGTH
    assert long_reason.startswith("ValueError: xxx")
    assert empty == "KeyError"
    assert odd == "RuntimeError: nul \\x00 and lone \\udc80 surrogate"


def test_excluded_exception_types_count_as_neither_and_still_propagate(brama: Brama) -> None:
    brama.register("svc", failure_threshold=1)
    for exclude in (Ignored, (Ignored, LookupError), [KeyError, Ignored]):
        error = Ignored("not the dependency's fault")
        with pytest.raises(Ignored) as caught, brama.guard("svc", exclude=exclude):
            raise error
        assert caught.value is error
    with pytest.raises(KeyError), brama.guard("svc", exclude=(Ignored, LookupError)):
        raise KeyError("a subclass of an excluded type")
    assert reports(brama) == []
    assert brama.status("svc").state is State.UNKNOWN
    with pytest.raises(Boom), brama.guard("svc", exclude=Ignored):
        raise_boom()
    assert reports(brama) == [("failure", "Boom: card declined")]


def test_an_exclude_predicate_decides_per_exception(brama: Brama) -> None:
    brama.register("svc", failure_threshold=10)

    def client_error(error: BaseException) -> bool:
        return isinstance(error, Boom) and "4" in str(error)

    for message in ("HTTP 404", "HTTP 503", "HTTP 400"):
        with pytest.raises(Boom), brama.guard("svc", exclude=client_error):
            raise Boom(message)
    assert reports(brama) == [("failure", "Boom: HTTP 503")]


def test_a_predicate_that_raises_is_logged_and_the_exception_counts(
    brama: Brama, caplog: pytest.LogCaptureFixture
) -> None:
    brama.register("svc")

    def broken(error: BaseException) -> bool:
        raise RuntimeError("predicate bug")

    with (
        caplog.at_level(logging.ERROR, logger="brama_sql"),
        pytest.raises(Boom),
        brama.guard("svc", exclude=broken),
    ):
        raise_boom()
    assert reports(brama) == [("failure", "Boom: card declined")]
    assert any("exclude predicate" in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize(
    "error",
    [KeyboardInterrupt(), SystemExit(3), GeneratorExit(), asyncio.CancelledError()],
    ids=lambda error: type(error).__name__,
)
def test_base_exceptions_are_never_reported_and_hand_the_probe_back(
    make_brama: MakeBrama, clock: FrozenDateTimeFactory, error: BaseException
) -> None:
    brama = make_brama()
    brama.register("svc", failure_threshold=1, expiry=60, half_open_max_calls=1)
    brama.failure("svc")
    clock.tick(60)
    with pytest.raises(type(error)) as caught, brama.guard("svc") as permit:
        assert permit.probe and permit_count(brama) == 1
        raise error
    assert caught.value is error
    assert permit_count(brama) == 0, "the probe permit was handed back at once"
    assert [kind for kind, _ in reports(brama)] == ["failure"], "nothing more was reported"
    with brama.guard("svc") as second:  # another caller may probe now
        assert second.probe
    assert brama.status("svc").state is State.CLOSED
    verify(brama.engine, "svc")


def test_an_excluded_exception_hands_the_probe_back(
    make_brama: MakeBrama, clock: FrozenDateTimeFactory
) -> None:
    brama = make_brama()
    brama.register("svc", failure_threshold=1, expiry=60, half_open_max_calls=1)
    brama.open("svc")
    clock.tick(61)
    with pytest.raises(Ignored), brama.guard("svc", exclude=Ignored):
        raise Ignored()
    assert permit_count(brama) == 0
    assert brama.status("svc").state is State.HALF_OPEN
    assert brama.acquire("svc") is not None


def test_a_refused_call_raises_circuit_open_error_with_status_and_retry_after(
    brama: Brama, clock: FrozenDateTimeFactory
) -> None:
    brama.register("svc", scope="payments", failure_threshold=1, expiry=60)
    brama.failure("svc", scope="payments")
    clock.tick(15.5)
    ran = []
    with pytest.raises(CircuitOpenError) as caught, brama.guard("svc", scope="payments"):
        ran.append(True)
    assert ran == [], "the block did not run"
    error = caught.value
    assert isinstance(error, BramaError)
    assert not isinstance(error, (ValueError, TypeError, LookupError))
    assert (error.identifier, error.scope) == ("svc", "payments")
    assert error.status is not None and error.status.state is State.OPEN
    assert error.status.opened_at == T0
    assert error.retry_after == pytest.approx(44.5)
    assert "retry after 44.5 s" in str(error)
    clock.tick(44.499)
    with pytest.raises(CircuitOpenError) as later, brama.guard("svc", scope="payments"):
        pass
    assert later.value.retry_after == pytest.approx(0.001)
    clock.tick(0.001)
    with brama.guard("svc", scope="payments"):  # exactly at the expiry: a probe
        pass
    assert brama.status("svc", scope="payments").state is State.CLOSED
    assert reports(brama) == [("failure", None), ("success", None)]


def test_half_open_with_every_permit_taken_has_no_retry_after(
    make_brama: MakeBrama, clock: FrozenDateTimeFactory
) -> None:
    brama = make_brama()
    brama.register("svc", failure_threshold=1, expiry=60, half_open_max_calls=1)
    brama.open("svc")
    clock.tick(60)
    with brama.guard("svc") as permit:
        assert permit.probe
        with pytest.raises(CircuitOpenError) as caught, brama.guard("svc"):
            pass
        assert caught.value.retry_after is None
        assert caught.value.status is not None
        assert caught.value.status.state is State.HALF_OPEN
        assert "half_open" in str(caught.value)
    assert brama.status("svc").state is State.CLOSED


def test_an_unregistered_connection_raises_not_registered(brama: Brama) -> None:
    ran = []
    with pytest.raises(NotRegisteredError) as caught, brama.guard("ghost", scope="s"):
        ran.append(True)
    assert ran == []
    assert (caught.value.identifier, caught.value.scope) == ("ghost", "s")
    assert brama.connections() == []


def test_register_true_registers_on_first_use_with_the_guards_options(brama: Brama) -> None:
    options = {
        "failure_threshold": 2,
        "expiry": 30,
        "half_open_max_calls": 1,
        "probe_timeout": 5,
        "metadata": {"team": "payments"},
    }
    with brama.guard("new", scope="p", register=True, **options):
        pass
    status = brama.status("new", scope="p")
    assert (status.failure_threshold, status.expiry, status.half_open_max_calls) == (2, 30, 1)
    assert status.probe_timeout == 5 and status.metadata == {"team": "payments"}
    assert status.total_successes == 1
    registered = [e for e in brama.events("new") if e.kind is Kind.REGISTERED]
    assert len(registered) == 1


def test_register_true_never_changes_an_existing_connection_and_warns_once(
    brama: Brama, caplog: pytest.LogCaptureFixture
) -> None:
    brama.register("svc", failure_threshold=3, expiry=60)
    brama.failure("svc")
    brama.failure("svc")
    with caplog.at_level(logging.WARNING, logger="brama_sql"):
        for _ in range(5):
            with (
                pytest.raises(Ignored),
                brama.guard("svc", register=True, failure_threshold=7, exclude=Ignored),
            ):
                raise Ignored()
    status = brama.status("svc")
    assert (status.failure_threshold, status.failure_count) == (3, 2), "nothing was reset"
    assert [e.kind for e in brama.events("svc")].count(Kind.REGISTERED) == 1
    warnings = [record.getMessage() for record in caplog.records]
    assert len(warnings) == 1, warnings
    assert "failure_threshold 3 -> 7" in warnings[0]


def test_register_true_registers_again_after_the_connection_was_removed(brama: Brama) -> None:
    with brama.guard("svc", register=True, failure_threshold=4):
        pass
    assert brama.unregister("svc")
    with brama.guard("svc", register=True, failure_threshold=4):
        pass
    status = brama.status("svc")
    assert status.failure_threshold == 4 and status.total_successes == 1
    kinds = [e.kind for e in brama.events("svc")]
    assert kinds.count(Kind.REGISTERED) == 2


def test_register_true_from_racing_threads_registers_once(make_brama: MakeBrama) -> None:
    callers = [make_brama() for _ in range(4)]
    barrier = threading.Barrier(8)
    failed: list[BaseException] = []

    def call(brama: Brama) -> None:
        barrier.wait()
        try:
            for _ in range(3):
                with brama.guard("raced", register=True, failure_threshold=50):
                    pass
        except BaseException as error:
            failed.append(error)

    threads = [threading.Thread(target=call, args=(callers[i % 4],)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert failed == []
    status = callers[0].status("raced")
    assert status.total_successes == 24 and status.failure_threshold == 50
    assert [e.kind for e in callers[0].events("raced")].count(Kind.REGISTERED) == 1
    verify(callers[0].engine, "raced")


def test_a_block_that_reports_through_its_permit_is_not_reported_again(brama: Brama) -> None:
    brama.register("svc")
    with brama.guard("svc") as permit:
        permit.failure(reason="HTTP 503")
    with pytest.raises(Boom), brama.guard("svc") as permit:
        permit.success(reason="the retry inside the block worked")
        raise Boom("after the report")
    assert reports(brama) == [
        ("failure", "HTTP 503"),
        ("success", "the retry inside the block worked"),
    ]


def test_one_guard_serves_many_threads_and_nested_blocks(brama: Brama) -> None:
    brama.register("svc", failure_threshold=1000)
    guard = brama.guard("svc", exclude=Ignored)
    barrier = threading.Barrier(4)

    def call(worker: int) -> None:
        barrier.wait()
        for round_ in range(5):
            try:
                with guard:
                    with guard:
                        pass  # the inner call: a success
                    if (worker + round_) % 2:
                        raise Boom("outer")
            except Boom:
                pass

    threads = [threading.Thread(target=call, args=(worker,)) for worker in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    status = brama.status("svc")
    assert (status.total_successes, status.total_failures) == (20 + 10, 10)


def test_deny_refuses_with_no_status_when_the_database_fails(
    make_brama: MakeBrama, monkeypatch: pytest.MonkeyPatch
) -> None:
    deny = make_brama(on_db_error="deny")
    allow = make_brama(on_db_error="allow")
    deny.register("svc")

    def down(*args: object, **kwargs: object) -> None:
        raise BramaDatabaseError("available", ConnectionError("database down"))

    for brama in (deny, allow):
        monkeypatch.setattr(brama._store, "admit", down)
    with pytest.raises(CircuitOpenError) as caught, deny.guard("svc"):
        pytest.fail("the block must not run")
    assert caught.value.status is None and caught.value.retry_after is None
    assert isinstance(caught.value.__cause__, BramaDatabaseError)
    with allow.guard("svc") as permit:  # fails open
        assert not permit.probe
    assert deny.status("svc").total_successes == 1


def test_bad_options_raise_before_anything_is_written(brama: Brama) -> None:
    with pytest.raises(InvalidArgumentError, match="register=True"):
        brama.guard("svc", failure_threshold=3)
    with pytest.raises(InvalidArgumentError, match="expiry, half_open_max_calls"):
        brama.guard("svc", expiry=3, half_open_max_calls=None)
    with pytest.raises(ArgumentTypeError, match="register must be a bool"):
        brama.guard("svc", register="yes")  # type: ignore[arg-type]
    for exclude in ("ValueError", 42, [ValueError, "KeyError"], (int,), [str]):
        with pytest.raises(ArgumentTypeError, match="exclude"):
            brama.guard("svc", exclude=exclude)  # type: ignore[arg-type]

    async def predicate(error: BaseException) -> bool:
        return True

    with pytest.raises(ArgumentTypeError, match="coroutine"):
        brama.guard("svc", exclude=predicate)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError):
        brama.guard("svc", register=True, failure_threshold=0)
    with pytest.raises(ArgumentTypeError):
        brama.guard(42)  # type: ignore[arg-type]
    assert brama.connections() == [] and brama.events() == []


@pytest.mark.skipif(sys.version_info < (3, 11), reason="ExceptionGroup is new in 3.11")
def test_an_exception_group_counts_as_a_failure(brama: Brama) -> None:
    brama.register("svc")
    group = ExceptionGroup("calls failed", [Boom("a"), Boom("b")])  # noqa: F821
    with pytest.raises(ExceptionGroup) as caught, brama.guard("svc"):  # noqa: F821
        raise group
    assert caught.value is group
    assert reports(brama) == [("failure", "ExceptionGroup: calls failed (2 sub-exceptions)")]


def test_a_failed_first_use_registration_answers_by_the_policy(
    make_brama: MakeBrama, monkeypatch: pytest.MonkeyPatch
) -> None:
    allow, deny, strict = (make_brama(on_db_error=policy) for policy in ("allow", "deny", "raise"))

    def down(*args: object, **kwargs: object) -> None:
        raise BramaDatabaseError("register", ConnectionError("database down"))

    for brama in (allow, deny, strict):
        for method in ("register", "admit", "change"):
            monkeypatch.setattr(brama._store, method, down)
    with pytest.raises(BramaDatabaseError), strict.guard("svc", register=True):
        pytest.fail("the block must not run")
    with pytest.raises(CircuitOpenError) as caught, deny.guard("svc", register=True):
        pytest.fail("the block must not run")
    assert caught.value.status is None
    ran = []
    with allow.guard("svc", register=True) as permit:  # fails open; the report is dropped
        ran.append(permit.probe)
    assert ran == [False]
    monkeypatch.undo()
    with allow.guard("svc", register=True, failure_threshold=9):  # registers now
        pass
    assert allow.status("svc").failure_threshold == 9
