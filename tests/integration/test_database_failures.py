"""When the database fails: ``on_db_error`` decides for ``available()`` and the reports, a stuck
lock makes a caller give up quickly, deadlocks are retried a bounded number of times, a killed
connection never leaves a half-written transition, and reports resume once the database is back.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, suppress

import pytest
from sqlalchemy import text
from sqlalchemy.engine import URL, Connection
from sqlalchemy.exc import DBAPIError

from brama_sql import (
    Brama,
    BramaDatabaseError,
    Kind,
    NotRegisteredError,
    ReportOutcomeUnknownError,
    State,
)
from brama_sql.replay import verify
from brama_sql.transaction import ATTEMPTS

UNREACHABLE = {
    "sqlite": "sqlite:////nonexistent-folder/brama.db",
    "postgresql": "postgresql+psycopg://postgres@127.0.0.1:1/test",
    "mysql": "mysql+pymysql://root@127.0.0.1:1/test",
}


@pytest.fixture(params=sorted(UNREACHABLE))
def unreachable(request: pytest.FixtureRequest) -> Iterator[Callable[..., Brama]]:
    made: list[Brama] = []

    def make(**options: object) -> Brama:
        made.append(Brama(UNREACHABLE[request.param], **options))  # type: ignore[arg-type]
        return made[-1]

    yield make
    for brama in made:
        brama.dispose()


def test_raise_is_the_default_and_names_the_operation(unreachable: Callable[..., Brama]) -> None:
    brama = unreachable()
    for operation, call in [
        ("available", lambda: brama.available("svc")),
        ("failure", lambda: brama.failure("svc")),
        ("success", lambda: brama.success("svc")),
        ("register", lambda: brama.register("svc")),
        ("status", lambda: brama.status("svc")),
    ]:
        with pytest.raises(BramaDatabaseError, match=rf"{operation}\(\) failed") as caught:
            call()
        assert caught.value.operation == operation


@pytest.mark.parametrize(("policy", "answer"), [("allow", True), ("deny", False)])
def test_allow_and_deny(
    unreachable: Callable[..., Brama],
    policy: str,
    answer: bool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    brama = unreachable(on_db_error=policy)
    with caplog.at_level(logging.WARNING, logger="brama_sql"):
        assert brama.available("svc") is answer
        assert brama.failure("svc", reason="timeout") is None
        assert brama.success("svc") is None
    messages = [record.getMessage() for record in caplog.records]
    assert any(f"available() answers {policy}" in m for m in messages)
    assert any("failure report for svc dropped" in m for m in messages)
    assert any("success report for svc dropped" in m for m in messages)
    with pytest.raises(BramaDatabaseError):
        brama.status("svc")  # the policy covers the hot path only; reads of state still raise


def test_policies_do_not_hide_mistakes(make_brama: Callable[..., Brama]) -> None:
    brama = make_brama(on_db_error="allow")
    with pytest.raises(NotRegisteredError):
        brama.failure("never-registered")


@pytest.mark.parametrize("policy", ["raise", "allow"])
def test_a_stuck_lock_makes_a_report_give_up_quickly(
    make_brama: Callable[..., Brama],
    hold_row_lock: Callable[..., AbstractContextManager[Connection]],
    policy: str,
) -> None:
    # Registered by an instance with the default limits: with a 1 s lock wait, the server ends
    # a transaction left idle for 0.5 s, and a pause of the test process (a garbage collection
    # late in the suite) then fails the setup instead of the call under test.
    make_brama().register("svc")
    brama = make_brama(lock_timeout=1, on_db_error=policy)
    before = len(brama.events())
    with hold_row_lock():
        started = time.monotonic()
        if policy == "raise":
            with pytest.raises(BramaDatabaseError, match="failure"):
                brama.failure("svc")
        else:
            brama.failure("svc")
        waited = time.monotonic() - started
        assert brama.available("svc"), "a closed circuit answers without the row lock"
    assert 0.5 < waited < 10, "it waited for the lock, then gave up long before the server default"
    assert len(brama.events()) == before, "nothing was written"
    brama.failure("svc")
    assert brama.status("svc").total_failures == 1
    verify(brama.engine, "svc")


def _raise_retryable(conn: Connection) -> None:
    """Make the real server report a deadlock in this transaction."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(
            "DO $$ BEGIN RAISE EXCEPTION 'deadlock' USING ERRCODE = '40P01'; END $$"
        )
    else:
        conn.exec_driver_sql(
            "BEGIN NOT ATOMIC SIGNAL SQLSTATE '40001' SET MYSQL_ERRNO = 1213, "
            "MESSAGE_TEXT = 'deadlock'; END"
        )


SERVERS = pytest.mark.parametrize("dialect", ["postgresql", "mysql"], indirect=True)
"""For what only a server does: SQLite serialises writers with BEGIN IMMEDIATE (it reports no
deadlocks), and an embedded database has no connection to kill."""


@SERVERS
@pytest.mark.parametrize("failing_attempts", [1, ATTEMPTS - 1, ATTEMPTS])
def test_deadlocks_are_retried_a_bounded_number_of_times(
    brama: Brama, failing_attempts: int
) -> None:
    brama.register("svc")
    attempts: list[int] = []

    def body(conn: Connection) -> str:
        attempts.append(1)
        conn.exec_driver_sql("UPDATE brama_connections SET failure_count = failure_count + 1")
        if len(attempts) <= failing_attempts:
            _raise_retryable(conn)
        return "committed"

    if failing_attempts < ATTEMPTS:
        assert brama._store.run("failure", body, write=True) == "committed"
        assert len(attempts) == failing_attempts + 1
        expected_count = 1
    else:
        with pytest.raises(BramaDatabaseError, match="failure"):
            brama._store.run("failure", body, write=True)
        assert len(attempts) == ATTEMPTS
        expected_count = 0
    assert brama.status("svc").failure_count == expected_count, "failed attempts rolled back"


def _backends(admin: Connection, dialect: str, database: str) -> list[int]:
    if dialect == "postgresql":
        query = "SELECT pid FROM pg_stat_activity WHERE datname = :db AND pid <> pg_backend_pid()"
    else:
        query = (
            "SELECT id FROM information_schema.processlist WHERE db = :db AND id <> CONNECTION_ID()"
        )
    return list(admin.execute(text(query), {"db": database}).scalars())


def _waiting_for_a_lock(admin: Connection, dialect: str, database: str) -> list[int]:
    if dialect == "postgresql":
        query = "SELECT pid FROM pg_stat_activity WHERE datname = :db AND wait_event_type = 'Lock'"
        return list(admin.execute(text(query), {"db": database}).scalars())
    query = (
        "SELECT id FROM information_schema.processlist WHERE db = :db "
        "AND id <> CONNECTION_ID() AND info LIKE '%FOR UPDATE%'"
    )
    return list(admin.execute(text(query), {"db": database}).scalars())


def _kill(admin: Connection, dialect: str, backend: int) -> None:
    if dialect == "postgresql":
        admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": backend})
    else:
        with suppress(DBAPIError):  # it may have ended by itself meanwhile
            admin.exec_driver_sql(f"KILL {int(backend)}")


def _next_waiter(admin: Connection, dialect: str, database: str, seen: set[int]) -> int:
    """The backend of the report now blocked on the row lock, not one of ``seen``."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        waiting = set(_waiting_for_a_lock(admin, dialect, database)) - seen
        if waiting:
            return waiting.pop()
        time.sleep(0.02)  # polling the server for the blocked report, not waiting on time
    raise AssertionError("the report never blocked on the row lock")


def _reporter(brama: Brama) -> tuple[threading.Thread, list[BaseException | None]]:
    """A started thread reporting a failure of ``svc``, and where its outcome goes (``None``
    when the report returned, else its error)."""
    outcome: list[BaseException | None] = []

    def report() -> None:
        try:
            brama.failure("svc")  # would trip the circuit: a transition in the same transaction
            outcome.append(None)
        except BaseException as error:
            outcome.append(error)

    thread = threading.Thread(target=report)
    thread.start()
    return thread, outcome


@SERVERS
def test_a_connection_killed_mid_transaction_writes_nothing_and_the_report_is_retried(
    make_brama: Callable[..., Brama],
    db_url: URL,
    dialect: str,
    admin: Connection,
    hold_row_lock: Callable[..., AbstractContextManager[Connection]],
) -> None:
    """A session killed before its commit wrote nothing, so the report runs again on a new
    connection: it returns normally and is counted exactly once."""
    brama = make_brama(lock_timeout=30)
    brama.register("svc", failure_threshold=1)
    database = str(db_url.database)
    with hold_row_lock():
        reporter, outcome = _reporter(brama)
        first = _next_waiter(admin, dialect, database, set())
        _kill(admin, dialect, first)
        second = _next_waiter(admin, dialect, database, {first})
        assert second != first, "the report waits again, on a new connection"
        assert [e.kind for e in brama.events("svc")] == [Kind.REGISTERED]
    reporter.join(30)
    assert outcome == [None]
    status = brama.status("svc")
    assert status.state is State.OPEN and status.total_failures == 1
    assert [e.kind for e in brama.events("svc")] == [Kind.REGISTERED, Kind.FAILURE, Kind.TRANSITION]
    verify(brama.engine, "svc")


@SERVERS
def test_a_report_whose_every_attempt_is_killed_raises_and_writes_nothing(
    make_brama: Callable[..., Brama],
    db_url: URL,
    dialect: str,
    admin: Connection,
    hold_row_lock: Callable[..., AbstractContextManager[Connection]],
) -> None:
    brama = make_brama(lock_timeout=30)
    brama.register("svc", failure_threshold=1)
    database = str(db_url.database)
    with hold_row_lock():
        reporter, outcome = _reporter(brama)
        killed: set[int] = set()
        for _ in range(ATTEMPTS):
            backend = _next_waiter(admin, dialect, database, killed)
            _kill(admin, dialect, backend)
            killed.add(backend)
        reporter.join(30)
    assert len(outcome) == 1 and isinstance(outcome[0], BramaDatabaseError)
    status = brama.status("svc")
    assert status.state is State.UNKNOWN and status.total_failures == 0
    assert [e.kind for e in brama.events("svc")] == [Kind.REGISTERED]
    brama.failure("svc")  # the database is back: reports resume
    assert brama.status("svc").state is State.OPEN
    verify(brama.engine, "svc")


@SERVERS
@pytest.mark.parametrize("policy", ["raise", "allow", "deny"])
def test_reports_through_repeated_kills_stay_consistent(
    make_brama: Callable[..., Brama],
    db_url: URL,
    dialect: str,
    admin: Connection,
    policy: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    brama = make_brama(on_db_error=policy)
    brama.register("svc", failure_threshold=1_000_000)
    stop = threading.Event()
    kills = 0

    def killer() -> None:
        nonlocal kills
        while not stop.is_set():
            for backend in _backends(admin, dialect, str(db_url.database)):
                _kill(admin, dialect, backend)
                kills += 1
            stop.wait(0.01)

    thread = threading.Thread(target=killer)
    thread.start()
    returned, failed, unknown, answers, refused = 0, 0, 0, set(), 0
    started = time.monotonic()
    try:
        with caplog.at_level(logging.WARNING, logger="brama_sql"):
            # Ask and report until some calls were cut off by the kills (bounded either way).
            for attempt in range(3000):
                try:
                    answers.add(brama.available("svc"))
                except BramaDatabaseError:
                    refused += 1
                try:
                    brama.failure("svc")
                    returned += 1
                except ReportOutcomeUnknownError:
                    unknown += 1
                except BramaDatabaseError:
                    failed += 1
                dropped = sum("dropped" in record.getMessage() for record in caplog.records)
                cut_off = failed + dropped
                if (attempt >= 200 and cut_off >= 3) or (
                    time.monotonic() - started > 5 and cut_off
                ):
                    break
    finally:
        stop.set()
        thread.join()
    assert kills > 0
    messages = [record.getMessage() for record in caplog.records]
    if policy == "raise":
        assert answers == {True}, "the circuit stayed closed: every answer that came was True"
    else:
        assert failed == refused == unknown == 0, f"the {policy} never raises on the hot path"
        failed = sum("dropped" in message for message in messages)
        unknown = sum("outcome unknown" in message for message in messages)
        returned -= failed + unknown
        answered = sum(f"answers {policy}" in message for message in messages)
        # A closed circuit answers True; a failed read answers the policy.
        assert answers == ({True} if policy == "allow" or not answered else {True, False})
    assert failed > 0, "no report was cut off by the kills: the test proved nothing"
    logged = brama.status("svc").total_failures
    # Every report that returned is counted once, and one that failed is not counted: a commit
    # whose answer was lost is looked up. Only an outcome left unknown (the database did not
    # come back within the call's bound) may be either.
    assert returned <= logged <= returned + unknown
    verify(brama.engine, "svc")
    brama.failure("svc")
    assert brama.status("svc").total_failures == logged + 1


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A local port that accepts connections and never says a word (a hung server)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    yield listener.getsockname()[1]
    listener.close()
    for conn in accepted:
        conn.close()


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://postgres@127.0.0.1:{port}/test",
        "mysql+pymysql://root@127.0.0.1:{port}/test",
    ],
    ids=["postgresql", "mysql"],
)
@pytest.mark.parametrize(("policy", "answer"), [("allow", True), ("deny", False)])
def test_a_server_that_never_answers_is_given_up_on_and_the_policy_answers(
    silent_server: int,
    url: str,
    policy: str,
    answer: bool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The engine's own timeouts (no URL parameters) bound every call."""
    brama = Brama(
        url.format(port=silent_server),
        on_db_error=policy,  # type: ignore[arg-type]
        lock_timeout=0.5,
    )
    try:
        started = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="brama_sql"):
            assert brama.available("svc") is answer
            assert brama.failure("svc") is None
        assert time.monotonic() - started < 9, "each call gave up after about 2 s"
        messages = " ".join(record.getMessage() for record in caplog.records)
        assert "timeout expired" in messages or "timed out" in messages, messages
    finally:
        brama.dispose()


class StallingProxy:
    """A TCP proxy to a real server that can stop forwarding (a server that hangs after the
    connection was made) while keeping every connection open."""

    def __init__(self, port: int) -> None:
        self.upstream = port
        self.stalled = threading.Event()
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = [self.listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client = self.listener.accept()[0]
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream))
            self.sockets += [client, server]
            for source, target in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                return
            if not data:
                return
            if self.stalled.is_set():
                continue  # swallow it: the "server" hangs
            try:
                target.sendall(data)
            except OSError:
                return

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()


@pytest.mark.parametrize("dialect", ["mysql"], indirect=True)
def test_a_server_that_hangs_mid_connection_is_given_up_on(
    db_url: URL,
) -> None:
    """MySQL/MariaDB: the read timeout ends a call on a connection whose server went silent.
    (PostgreSQL's client library has no read timeout: see the guarantees page.)"""
    proxy = StallingProxy(db_url.port or 3306)
    url = db_url.set(host="127.0.0.1", port=proxy.port)
    brama = Brama(url.render_as_string(hide_password=False), on_db_error="allow", lock_timeout=0.5)
    try:
        brama.register("svc")
        proxy.stalled.set()
        started = time.monotonic()
        assert brama.available("svc") is True
        assert time.monotonic() - started < 9
    finally:
        brama.dispose()
        proxy.close()
