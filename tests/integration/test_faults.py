"""Network faults between brama_sql and a real server, through a TCP proxy on 127.0.0.1
(:mod:`proxy`): a COMMIT whose reply is lost, resets before and during a transaction, a server
gone silent, a client frozen while it holds a row lock, and sessions killed from the server
side while four processes report. After each: no report that returned is missing or doubled,
none that raised was written, every call ended within its bound, and the log explains the row.
"""

from __future__ import annotations

import logging
import multiprocessing
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import suppress
from typing import Any

import fault_workers
import pytest
from proxy import Proxy
from sqlalchemy import create_engine, event, select, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError

from brama_sql import (
    Brama,
    Kind,
    ReportOutcomeUnknownError,
    State,
)
from brama_sql.replay import verify
from brama_sql.schema import connections

SERVERS = pytest.mark.parametrize("dialect", ["postgresql", "mysql"], indirect=True)
LOCK_TIMEOUT = 2.0
IO_TIMEOUT = 2.0  # PostgreSQL connects in at least 2 s: the same allowance on both
BOUND = LOCK_TIMEOUT + IO_TIMEOUT
SLACK = 0.6
"""Waking the watchdog's thread and scheduling it on a loaded 2-core machine."""

pytestmark = SERVERS


@pytest.fixture
def proxy(db_url: URL) -> Iterator[Proxy]:
    """A proxy in front of the test database's server."""
    running = Proxy(db_url.port or (5432 if db_url.get_backend_name() == "postgresql" else 3306))
    yield running
    running.close()


@pytest.fixture
def through(db_url: URL, proxy: Proxy) -> Iterator[Callable[..., Brama]]:
    """A factory of Bramas that reach the database through the proxy."""
    made: list[Brama] = []
    url = db_url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)

    def make(**options: Any) -> Brama:
        options = {"lock_timeout": LOCK_TIMEOUT, "io_timeout": IO_TIMEOUT, **options}
        brama = Brama(url, **options)
        made.append(brama)
        return brama

    yield make
    for brama in made:
        brama.dispose()


def _reasons(brama: Brama, identifier: str = "svc") -> Counter[str | None]:
    return Counter(event.reason for event in brama.events(identifier) if event.kind is Kind.FAILURE)


# -- a COMMIT whose reply is lost ---------------------------------------------------------------


CALLS: dict[str, Callable[[Brama], object]] = {
    "failure": lambda b: b.failure("svc", reason="lost reply"),
    "success": lambda b: b.success("svc"),
    "open": lambda b: b.open("svc"),
    "close": lambda b: b.close("svc"),
    "reset": lambda b: b.reset("svc"),
    "configure": lambda b: b.configure("svc", failure_threshold=7),
    "unregister": lambda b: b.unregister("svc"),
    "register": lambda b: b.register("new"),
}


@pytest.mark.parametrize("call", sorted(CALLS))
def test_a_lost_commit_reply_is_found_out_and_counted_once(
    through: Callable[..., Brama], brama: Brama, proxy: Proxy, call: str
) -> None:
    brama.register("svc", failure_threshold=5)
    before = brama.events()
    client = through()
    client.available("svc")  # warm: the schema check and a pooled connection
    proxy.lose_commit_reply()
    started = time.monotonic()
    CALLS[call](client)  # returns normally
    assert time.monotonic() - started < BOUND + SLACK
    assert proxy.commits_lost == 1, "the proxy lost a COMMIT's reply"
    written = brama.events()[len(before) :]
    assert len({event.id for event in written}) == len(written)
    kinds = [event.kind for event in written]
    expected = {
        "failure": [Kind.FAILURE, Kind.TRANSITION],  # unknown -> closed
        "success": [Kind.SUCCESS, Kind.TRANSITION],
        "open": [Kind.TRANSITION],
        "close": [Kind.TRANSITION],
        "reset": [Kind.TRANSITION],
        "configure": [Kind.CONFIGURED],
        "unregister": [Kind.UNREGISTERED],
        "register": [Kind.REGISTERED],
    }[call]
    assert kinds == expected, "written exactly once"
    if call != "unregister":
        verify(brama.engine, "new" if call == "register" else "svc")


def test_a_lost_commit_reply_returns_the_transition_the_report_caused(
    through: Callable[..., Brama], brama: Brama, proxy: Proxy
) -> None:
    brama.register("svc", failure_threshold=2)
    client = through()
    client.failure("svc")
    proxy.lose_commit_reply()
    transition = client.failure("svc", reason="second")
    assert transition is not None
    assert (transition.from_state, transition.to_state) == (State.CLOSED, State.OPEN)
    assert brama.status("svc").total_failures == 2
    verify(brama.engine, "svc")


# -- resets -------------------------------------------------------------------------------------


def test_pooled_connections_reset_while_idle_are_replaced_without_an_error(
    through: Callable[..., Brama], brama: Brama, proxy: Proxy
) -> None:
    """No pre-ping: a pooled connection the network reset fails on its first statement,
    before anything was written, and the call runs again on a new one."""
    brama.register("svc", failure_threshold=100)
    client = through()
    for _ in range(3):
        client.failure("svc", reason="before")
    proxy.reset()
    assert client.available("svc") is True
    client.failure("svc", reason="after")
    assert _reasons(brama) == Counter({"before": 3, "after": 1})


@pytest.mark.parametrize("read", ["available", "status"])
def test_every_pooled_connection_reset_while_idle_costs_a_read_one_retry(
    through: Callable[..., Brama], brama: Brama, proxy: Proxy, read: str
) -> None:
    """A server restart or a network reset breaks every pooled connection at once. As
    SQLAlchemy does, the first one found lost invalidates the whole pool, so that the retry
    connects anew instead of taking the next broken one (a pool of four broken connections
    would outlast a call's three attempts)."""
    brama.register("svc", failure_threshold=100)
    client = through()
    client.failure("svc", reason="before")
    held = [client.engine.raw_connection() for _ in range(4)]  # four pooled connections
    for fairy in held:
        fairy.close()
    proxy.reset()
    if read == "available":
        assert client.available("svc") is True
    else:
        assert client.status("svc").total_failures == 1


def test_every_pooled_connection_of_a_hosts_engine_reset_while_idle_costs_a_write_one_retry(
    db_url: URL, proxy: Proxy
) -> None:
    """On the host's engine a write first sets its session (on MariaDB/MySQL a statement):
    a broken pooled connection found there invalidates the whole pool too."""
    engine = create_engine(db_url.set(host="127.0.0.1", port=proxy.port))
    try:
        client = Brama(engine, lock_timeout=LOCK_TIMEOUT, io_timeout=IO_TIMEOUT)
        client.register("svc", failure_threshold=100)
        held = [engine.raw_connection() for _ in range(4)]  # four pooled connections
        for fairy in held:
            fairy.close()
        proxy.reset()
        client.failure("svc", reason="after")
        assert client.status("svc").total_failures == 1
    finally:
        engine.dispose()


def test_a_hosts_error_listener_sees_the_lost_connection_of_a_read(
    db_url: URL, proxy: Proxy
) -> None:
    """A host's ``handle_error`` listener (error metrics, its own disconnect rules) sees the
    driver errors of brama_sql's reads too, as it did when they ran through SQLAlchemy."""
    url = db_url.set(host="127.0.0.1", port=proxy.port)
    engine = create_engine(url)
    seen: list[bool] = []

    @event.listens_for(engine, "handle_error")
    def count(context: Any) -> None:
        seen.append(context.is_disconnect)

    try:
        client = Brama(engine, lock_timeout=LOCK_TIMEOUT, io_timeout=IO_TIMEOUT)
        client.register("svc")
        assert client.available("svc") is True
        proxy.reset()
        assert client.available("svc") is True
        assert seen == [True]
    finally:
        engine.dispose()


def test_a_reset_while_waiting_for_the_lock_writes_nothing_and_the_report_runs_again(
    through: Callable[..., Brama],
    brama: Brama,
    proxy: Proxy,
    hold_row_lock: Callable[..., Any],
) -> None:
    brama.register("svc", failure_threshold=100)
    client = through(lock_timeout=10)
    client.available("svc")
    client.success("svc")  # closed: the report below changes no state
    outcome: list[object] = []

    def report() -> None:
        try:
            outcome.append(client.failure("svc", reason="mid"))
        except BaseException as error:
            outcome.append(error)

    with hold_row_lock():
        reporter = threading.Thread(target=report)
        reporter.start()
        time.sleep(0.3)  # let it block on the lock (not an expiry wait)
        proxy.reset()
        time.sleep(0.3)
        assert _reasons(brama) == Counter(), "nothing written while the lock is held"
    reporter.join(15)
    assert outcome == [None]
    assert _reasons(brama) == Counter({"mid": 1})
    verify(brama.engine, "svc")


# -- a server gone silent -----------------------------------------------------------------------


@pytest.mark.parametrize(("policy", "answer"), [("allow", True), ("deny", False)])
def test_a_silent_server_is_given_up_on_within_the_bound_and_the_brama_recovers(
    through: Callable[..., Brama],
    brama: Brama,
    proxy: Proxy,
    policy: str,
    answer: bool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    brama.register("svc", failure_threshold=100)
    client = through(on_db_error=policy)
    client.failure("svc", reason="before")
    proxy.stall()
    try:
        with caplog.at_level(logging.WARNING, logger="brama_sql"):
            for call in (lambda: client.available("svc"), lambda: client.failure("svc")):
                started = time.monotonic()
                result = call()
                assert time.monotonic() - started < BOUND + SLACK
                assert result in (answer, None)
    finally:
        proxy.resume()
    messages = " ".join(record.getMessage() for record in caplog.records)
    assert f"answers {policy}" in messages
    assert "dropped" in messages or "outcome unknown" in messages
    client.failure("svc", reason="after")  # the same Brama, the server back
    assert client.available("svc") is True
    reasons = _reasons(brama)
    assert reasons["before"] == 1 and reasons["after"] == 1
    verify(brama.engine, "svc")


def test_a_report_whose_commit_stalls_raises_outcome_unknown_within_the_bound(
    through: Callable[..., Brama], brama: Brama, proxy: Proxy
) -> None:
    """The COMMIT reaches the server, which then goes silent until after the bound: the
    report cannot know and says so; once the server answers, the log tells."""
    brama.register("svc", failure_threshold=100)
    client = through()
    client.available("svc")
    proxy.lose_commit_reply()
    proxy.stall_after_commit = True
    started = time.monotonic()
    try:
        with pytest.raises(ReportOutcomeUnknownError, match="outcome unknown"):
            client.failure("svc", reason="unknown")
        assert time.monotonic() - started < BOUND + SLACK
    finally:
        proxy.resume()
    assert _reasons(brama)["unknown"] == 1  # it had committed
    verify(brama.engine, "svc")


# -- a client frozen while it holds a row lock --------------------------------------------------


def test_a_client_frozen_with_a_row_lock_does_not_block_the_others_past_the_bound(
    through: Callable[..., Brama], brama: Brama, proxy: Proxy, dialect: str
) -> None:
    """The server ends the frozen client's transaction once it has sat idle for half the
    lock wait limit, so the others' reports get the lock in time."""
    brama.register("svc", failure_threshold=100)
    frozen = through()
    frozen.available("svc")
    proxy.freeze_after_lock()
    conn = frozen.engine.connect()
    try:
        conn.begin()
        conn.execute(
            select(connections.c.id).where(connections.c.identifier == "svc").with_for_update()
        )
        assert proxy.frozen_links == 1
        other = Brama(
            brama.engine.url.render_as_string(hide_password=False),
            lock_timeout=LOCK_TIMEOUT,
            io_timeout=IO_TIMEOUT,
        )
        try:
            started = time.monotonic()
            other.failure("svc", reason="other")
            waited = time.monotonic() - started
            other.open("svc")
            other.close("svc")
        finally:
            other.dispose()
        assert waited < LOCK_TIMEOUT, "the orphaned lock went before the wait limit"
        assert _reasons(brama) == Counter({"other": 1})
    finally:
        with suppress(Exception):
            conn.invalidate()
        conn.close()
    verify(brama.engine, "svc")


# -- sessions killed from the server side while four processes report ------------------------


def _kill_all(db_url: URL, stop: threading.Event, kills: list[int]) -> None:
    engine = create_engine(db_url, isolation_level="AUTOCOMMIT")
    postgresql = db_url.get_backend_name() == "postgresql"
    with engine.connect() as admin:
        while not stop.is_set():
            if postgresql:
                query = (
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :db AND pid <> pg_backend_pid()"
                )
                kills.append(len(admin.execute(text(query), {"db": db_url.database}).all()))
            else:
                ids = admin.execute(
                    text(
                        "SELECT id FROM information_schema.processlist "
                        "WHERE db = :db AND id <> CONNECTION_ID()"
                    ),
                    {"db": db_url.database},
                ).scalars()
                for backend in list(ids):
                    with suppress(DBAPIError):
                        admin.exec_driver_sql(f"KILL {int(backend)}")
                        kills.append(1)
            stop.wait(0.015)
    engine.dispose()


@pytest.mark.slow
def test_four_processes_through_killed_sessions_lose_double_and_hide_nothing(
    brama: Brama, db_url: URL
) -> None:
    brama.register("svc", failure_threshold=10**9)
    url = db_url.render_as_string(hide_password=False)
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    workers = [
        context.Process(target=fault_workers.report_through_kills, args=(url, n, 100, results))
        for n in range(4)
    ]
    stop = threading.Event()
    kills: list[int] = []
    killer = threading.Thread(target=_kill_all, args=(db_url, stop, kills))
    killer.start()
    try:
        for worker in workers:
            worker.start()
        collected: list[dict[str, list[str]]] = []
        deadline = time.monotonic() + 120
        while len(collected) < len(workers) and time.monotonic() < deadline:
            with suppress(queue.Empty):
                collected.append(results.get(timeout=1))
    finally:
        stop.set()
        killer.join(30)
        for worker in workers:
            worker.join(30)
            if worker.is_alive():
                worker.kill()
    assert len(collected) == 4 and [worker.exitcode for worker in workers] == [0] * 4
    assert sum(kills) > 0
    returned = [reason for result in collected for reason in result["returned"]]
    raised = [reason for result in collected for reason in result["raised"]]
    unknown = [reason for result in collected for reason in result["unknown"]]
    logged = _reasons(brama)
    assert raised, "no report was cut off: the test proved nothing"
    assert all(logged[reason] == 1 for reason in returned), "returned: logged exactly once"
    assert not any(logged[reason] for reason in raised), "raised: not logged"
    assert all(logged[reason] <= 1 for reason in unknown), "unknown: at most once"
    assert sum(logged.values()) == len(returned) + sum(logged[reason] for reason in unknown)
    assert brama.status("svc").total_failures == sum(logged.values())
    verify(brama.engine, "svc")
