"""Engines: a host application's own Engine is as safe as one brama_sql builds from a URL, and
so is the in-memory SQLite database shared by threads; session settings survive rollbacks."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import pytest
from sqlalchemy import create_engine
from sqlalchemy.engine import URL, Connection, Engine

from brama_sql import AlreadyRegisteredError, Brama, BramaDatabaseError, NotRegisteredError
from brama_sql.replay import verify

THREADS = 4
REPORTS = 100


def hammer(brama: Brama, identifier: str) -> list[BaseException]:
    """Report ``REPORTS`` failures from each of ``THREADS`` threads; return what they raised."""
    raised: list[BaseException] = []

    def report() -> None:
        try:
            for _ in range(REPORTS):
                brama.failure(identifier)
        except BaseException as error:  # handed to the test thread
            raised.append(error)

    threads = [threading.Thread(target=report) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return raised


@pytest.fixture(params=["default", "AUTOCOMMIT", "REPEATABLE READ"])
def host_engine(db_url: URL, dialect: str, request: pytest.FixtureRequest) -> Iterator[Engine]:
    """An Engine made by the host application, at the isolation level the host chose."""
    level = {"default": None, "REPEATABLE READ": "SERIALIZABLE"}.get(request.param)
    if dialect != "sqlite" and request.param != "default":
        level = request.param
    engine = create_engine(db_url, **({} if level is None else {"isolation_level": level}))
    yield engine
    engine.dispose()


def test_a_host_engine_counts_every_report_exactly_once(host_engine: Engine) -> None:
    brama = Brama(host_engine)
    brama.register("svc", failure_threshold=1_000_000)
    assert hammer(brama, "svc") == []
    status = brama.status("svc")
    assert status.failure_count == status.total_failures == THREADS * REPORTS
    verify(host_engine, "svc")


def test_in_memory_sqlite_is_safe_across_threads() -> None:
    brama = Brama("sqlite://")
    brama.migrate()
    brama.register("svc", failure_threshold=1_000_000)
    assert hammer(brama, "svc") == []
    status = brama.status("svc")
    assert status.failure_count == status.total_failures == THREADS * REPORTS
    verify(brama.engine, "svc")
    brama.dispose()


@pytest.fixture(params=["built", "host"])
def engine_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_guarded(
    engine_kind: str, db_url: URL, make_brama: Callable[..., Brama]
) -> Iterator[Callable[..., Brama]]:
    """Bramas on an engine brama_sql builds, or on the host's own engine."""
    engines: list[Engine] = []

    def make(**options: Any) -> Brama:
        if engine_kind == "built":
            return make_brama(**options)
        engines.append(create_engine(db_url))
        return Brama(engines[-1], **options)

    yield make
    for engine in engines:
        engine.dispose()


def test_the_lock_wait_limit_survives_rolled_back_calls(
    make_guarded: Callable[..., Brama],
    hold_row_lock: Callable[..., AbstractContextManager[Connection]],
) -> None:
    brama = make_guarded(lock_timeout=1)
    brama.register("svc")
    # The usual start-up call rolls back its transaction, and so does an unknown name:
    assert brama.register("svc", exist_ok=True).identifier == "svc"
    with pytest.raises(AlreadyRegisteredError):
        brama.register("svc")
    with pytest.raises(NotRegisteredError):
        brama.failure("unknown")
    with hold_row_lock():
        started = time.monotonic()
        with pytest.raises(BramaDatabaseError, match="failure"):
            brama.failure("svc")
        waited = time.monotonic() - started
    assert 0.5 < waited < 10
    assert brama.status("svc").total_failures == 0


MARIADB = pytest.mark.parametrize("dialect", ["mysql"], indirect=True)


def _session(brama: Brama) -> tuple[int, int, int]:
    """The write connection's session as brama_sql left it in the pool: whether a transaction
    is open, and how many COMMITs and ROLLBACKs it ran. Calls from one thread use one pooled
    connection (the reads take theirs from the read pool)."""
    pool = brama.engine.pool
    assert pool.checkedin() == 1
    with brama.engine.connect() as conn:
        open_transaction = conn.exec_driver_sql("SELECT @@in_transaction").scalar_one()
        counts = dict(
            conn.exec_driver_sql(
                "SHOW SESSION STATUS WHERE Variable_name IN ('Com_commit', 'Com_rollback')"
            ).all()
        )
        conn.rollback()
    return int(open_transaction), int(counts["Com_commit"]), int(counts["Com_rollback"])


@MARIADB
def test_a_write_that_ended_its_transaction_sends_no_rollback_as_its_connection_goes_back(
    brama: Brama,
) -> None:
    # PyMySQL sends every ROLLBACK to the server: the pool's reset after a COMMIT was a round
    # trip per call that ended nothing.
    brama.register("svc", failure_threshold=100)
    _, commits_before, rollbacks_before = _session(brama)
    for _ in range(5):
        brama.failure("svc")
        brama.success("svc")
    open_transaction, commits, rollbacks = _session(brama)
    commits, rollbacks = commits - commits_before, rollbacks - rollbacks_before
    assert open_transaction == 0
    assert commits == 10
    # Each success after a failure first tried the shared lock, found a failure counted and
    # rolled back (once: the pool's reset sends no second ROLLBACK) to take the exclusive one.
    # (The look at the session above ended with a ROLLBACK of its own, and its check-in.)
    assert rollbacks == 5 + 2


@MARIADB
def test_a_write_that_failed_is_rolled_back_as_its_connection_goes_back(
    make_brama: Callable[..., Brama],
    hold_row_lock: Callable[..., AbstractContextManager[Connection]],
) -> None:
    brama = make_brama(lock_timeout=1)
    brama.register("svc")
    with pytest.raises(NotRegisteredError):  # its locking read began a transaction
        brama.failure("unknown")
    open_transaction, _, rollbacks = _session(brama)
    assert open_transaction == 0 and rollbacks >= 1
    with hold_row_lock(), pytest.raises(BramaDatabaseError, match="failure"):
        brama.failure("svc")  # a lock wait that ran out
    assert _session(brama)[0] == 0
    brama.failure("svc")
    assert brama.status("svc").total_failures == 1
