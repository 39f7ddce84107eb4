"""Fork safety, on every dialect: after a fork, a child never uses a database connection its
parent opened, on brama_sql's own engine and on a host engine passed to ``Brama(engine)``, and
the parent's connections stay usable in the parent.

Every engine under test tags each connection with the process that opened it and records, in
whichever process it happens, a checkout of a connection another process opened ("a stray"):
that is the bug itself, whether or not the database happens to notice. The parent primes its
pool from several threads, then forks children by ``os.fork()``, by ``multiprocessing``'s
``fork`` context and by a bare C ``fork()`` that skips Python's at-fork handlers (as uWSGI's
does); children and parent report on one connection at once, and the totals must be exact.
A gunicorn ``--preload`` run with 4 workers (``fork_app.py``) does the same through HTTP.
Every wait is bounded: a child or a server that does not finish in time is killed and the test
fails.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import multiprocessing
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import weakref
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Engine
from sqlalchemy.pool import QueuePool

from brama_sql import Brama, Kind
from brama_sql.replay import verify

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork (POSIX)"),
]

IDENTIFIER = "forked"
CHILDREN = 4
"""Children per way of forking."""
REPORTS = 200
"""Failure reports each child and the parent make."""
PRIMING_THREADS = 3
PRIMING_REPORTS = 5
WAIT_S = 60.0
LOCK_TIMEOUT_S = 30.0
"""How long the reports of the nine racing processes may wait for the row lock (SQLite's
database lock): these tests check connection hygiene, not lock waits, and a loaded machine may
keep one writer waiting past the default 5 s."""
"""The bound on anything a test waits for: children, a server, requests."""
FORK = multiprocessing.get_context("fork")
HERE = Path(__file__).resolve().parent


class Tracker:
    """Listens on an engine: tags every connection with the process that opened it and keeps,
    in the memory of each process, the connections it opened (and a weak reference to the
    pool's record of each, which holds the DBAPI connection), the checkouts of connections
    another process opened (strays) and the invalidated connections."""

    def __init__(self, engine: Engine) -> None:
        self.opened: list[int] = []
        self.opener: dict[int, int] = {}
        """The process that opened each DBAPI connection, by ``id()`` (a live connection's is
        its own: each opening sets it), those of brama_sql's read pool included, which reads
        use without a checkout."""
        self.connections: list[weakref.ref[Any]] = []
        self.strays: list[int] = []
        self.invalidated: list[str] = []
        event.listen(engine, "connect", self._connect)
        event.listen(engine, "checkout", self._checkout)
        event.listen(engine, "invalidate", self._invalidate)

    def _connect(self, dbapi_connection: Any, record: Any) -> None:
        record.info["opened_by"] = os.getpid()
        self.opener[id(dbapi_connection)] = os.getpid()
        self.opened.append(os.getpid())
        self.connections.append(weakref.ref(record))

    def _checkout(self, _dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        if record.info.get("opened_by") != os.getpid():
            self.strays.append(record.info.get("opened_by", -1))

    def _invalidate(self, _dbapi_connection: Any, _record: Any, error: Any) -> None:
        self.invalidated.append(f"{os.getpid()}: {error!r}")

    def read_strays(self, brama: Brama) -> list[int]:
        """The openers of the idle connections of ``brama``'s read pool (PostgreSQL) that
        another process opened."""
        reads = brama._transactions._read_pool
        idle = [] if reads is None else reads._idle
        return [
            opener
            for connection in idle
            if (opener := self.opener.get(id(connection.dbapi_connection), -1)) != os.getpid()
        ]


@dataclass
class Child:
    """A forked child: how it was forked, its pid, the end of the pipe it answers on, and its
    :mod:`multiprocessing` process if it has one."""

    how: str
    pid: int
    answers: Connection
    process: BaseProcess | None = None
    exit_code: int | None = None

    def wait(self, deadline: float) -> bool:
        """Wait for the child to exit, until ``deadline`` (monotonic); whether it did."""
        if self.process is not None:
            self.process.join(max(0.0, deadline - time.monotonic()))
            self.exit_code = self.process.exitcode
            return self.exit_code is not None
        while True:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.exit_code = os.waitstatus_to_exitcode(status)
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        self.wait(time.monotonic() + 10)


Work = Callable[[Connection], None]


class Children:
    """Children forked from the test process, each running a ``work(answers)`` that sends one
    result; :meth:`collect` gathers them within :data:`WAIT_S`, and leaving the block kills any
    child still running."""

    def __init__(self) -> None:
        self.forked: list[Child] = []

    def __enter__(self) -> Children:
        return self

    def __exit__(self, *_exc: object) -> None:
        for child in self.forked:
            if child.exit_code is None and not child.wait(time.monotonic()):
                child.kill()

    def os_fork(self, work: Work) -> None:
        self._bare("os.fork", os.fork, work)

    def c_fork(self, work: Work) -> None:
        """Fork with libc's ``fork()``, as C code such as uWSGI's does: Python's at-fork
        handlers do not run (``PyDLL`` keeps the GIL across the call)."""
        libc_fork = ctypes.PyDLL(None).fork
        libc_fork.restype = ctypes.c_int
        self._bare("C fork()", libc_fork, work)

    def multiprocessing(self, work: Work) -> None:
        answers, sender = FORK.Pipe(duplex=False)
        process = FORK.Process(target=work, args=(sender,), daemon=True)
        process.start()
        sender.close()
        assert process.pid is not None
        self.forked.append(Child("multiprocessing fork", process.pid, answers, process))

    def _bare(self, how: str, fork: Callable[[], int], work: Work) -> None:
        answers, sender = FORK.Pipe(duplex=False)
        pid = fork()
        if pid == 0:  # the child: never return into pytest
            code = 1
            try:
                answers.close()
                work(sender)
                code = 0
            finally:
                os._exit(code)
        assert pid > 0, f"{how} failed"
        sender.close()
        self.forked.append(Child(how, pid, answers))

    def collect(self) -> list[dict[str, Any]]:
        """Every child's answer; fails, naming the child, when one does not answer or exit
        with 0 within :data:`WAIT_S`."""
        deadline = time.monotonic() + WAIT_S
        results: list[dict[str, Any]] = []
        problems: list[str] = []
        for child in self.forked:
            remaining = max(0.0, deadline - time.monotonic())
            if child.answers.poll(remaining):
                try:
                    results.append(child.answers.recv())
                except EOFError:
                    problems.append(f"{child.how} child {child.pid} exited without answering")
            else:
                problems.append(f"{child.how} child {child.pid} did not answer in time")
        for child in self.forked:
            if not child.wait(deadline):
                child.kill()
                problems.append(f"{child.how} child {child.pid} hung and was killed")
            elif child.exit_code != 0:
                problems.append(f"{child.how} child {child.pid} exited with {child.exit_code}")
        assert not problems, problems
        return results


def alive(record: weakref.ref[Any]) -> bool:
    """Whether the pool record behind ``record`` still holds an open DBAPI connection."""
    found = record()
    return found is not None and found.dbapi_connection is not None


def url_of(db_url: URL) -> str:
    return db_url.render_as_string(hide_password=False)


def prime(brama: Brama) -> None:
    """Register the connection and fill the pool: three connections held at once, then
    reports from three threads, so that several used connections are pooled, checked in."""
    brama.register(IDENTIFIER, failure_threshold=10**6)
    # Reads from threads at once: on PostgreSQL they fill brama_sql's read pool, which takes
    # connections out of the engine's pool (the pool opens others in their place, below).
    with ThreadPoolExecutor(PRIMING_THREADS) as executor:
        assert all(executor.map(lambda _: brama.available(IDENTIFIER), range(20)))
    held = [brama.engine.connect() for _ in range(PRIMING_THREADS)]
    for connection in held:
        connection.close()
    errors: list[BaseException] = []

    def report() -> None:
        try:
            for _ in range(PRIMING_REPORTS):
                brama.failure(IDENTIFIER, reason="priming")
        except BaseException as error:  # reported by the assert below
            errors.append(error)

    threads = [threading.Thread(target=report) for _ in range(PRIMING_THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT_S)
    assert not errors
    assert not any(thread.is_alive() for thread in threads)
    pool = brama.engine.pool
    assert isinstance(pool, QueuePool)
    assert pool.checkedin() >= 2, pool.status()


def report_in_children(
    brama: Brama, tracker: Tracker, *, c_fork: bool = False, reports: int = REPORTS
) -> None:
    """Prime ``brama`` in this process, fork the children (4 by ``os.fork()`` and 4 by
    ``multiprocessing``, or, with ``c_fork``, 4 by C ``fork()``), let each make ``reports``
    failure reports while this process makes as many, and check everything that happened."""
    prime(brama)
    assert tracker.strays == [] and tracker.invalidated == []
    parent = os.getpid()
    opened_before = len(tracker.opened)
    inherited = [reference for reference in tracker.connections if alive(reference)]
    start = FORK.Event()

    def work(answers: Connection) -> None:
        errors: list[str] = []
        try:
            if not start.wait(WAIT_S):
                raise TimeoutError("the parent never said start")
            for _ in range(reports):
                brama.failure(IDENTIFIER, reason="child")
                brama.available(IDENTIFIER)
        except BaseException as error:
            errors.append(repr(error))
        gc.collect()
        answers.send(
            {
                "pid": os.getpid(),
                "errors": errors,
                "strays": tracker.strays + tracker.read_strays(brama),
                "opened_here": tracker.opened.count(os.getpid()),
                # A finalized DBAPI connection of the parent's may have closed its session.
                "finalized": sum(not alive(reference) for reference in inherited),
            }
        )
        answers.close()

    with Children() as children:
        for _ in range(CHILDREN):
            if c_fork:
                children.c_fork(work)
            else:
                children.os_fork(work)
                children.multiprocessing(work)
        start.set()
        for _ in range(reports):
            brama.failure(IDENTIFIER, reason="parent")
            brama.available(IDENTIFIER)
        results = children.collect()

    assert [result["errors"] for result in results] == [[]] * len(children.forked)
    assert [result["strays"] for result in results] == [[]] * len(children.forked), (
        "a child used a connection its parent opened"
    )
    assert all(result["opened_here"] >= 1 for result in results)
    assert inherited and [result["finalized"] for result in results] == [0] * len(results), (
        "a child finalized DBAPI connections of the parent's"
    )
    assert tracker.strays == [] and tracker.read_strays(brama) == []
    assert tracker.invalidated == [], "a child broke the parent's connections"
    assert tracker.opened[opened_before:] == [], "the parent had to reconnect"
    assert tracker.opened.count(parent) == len(tracker.opened)

    expected = PRIMING_THREADS * PRIMING_REPORTS + reports * (len(children.forked) + 1)
    status = brama.status(IDENTIFIER)
    assert status.total_failures == expected
    assert status.failure_count == expected
    by_process = Counter(
        int(event.actor.split(":")[1])
        for event in brama.events(IDENTIFIER)
        if event.kind is Kind.FAILURE and event.reason != "priming" and event.actor
    )
    assert by_process == {pid: reports for pid in [parent, *(r["pid"] for r in results)]}

    # The parent's same Brama and pool still work, on the connections it opened.
    brama.success(IDENTIFIER)
    assert brama.status(IDENTIFIER).failure_count == 0
    assert tracker.strays == [] and tracker.invalidated == []
    assert tracker.opened[opened_before:] == []
    verify(brama.engine, IDENTIFIER)


def test_children_never_use_the_parents_connections(make_brama: Callable[..., Brama]) -> None:
    brama = make_brama(lock_timeout=LOCK_TIMEOUT_S)
    report_in_children(brama, Tracker(brama.engine))


def test_children_never_use_the_parents_connections_of_a_host_engine(db_url: URL) -> None:
    engine = create_engine(db_url)
    tracker = Tracker(engine)
    try:
        # Half the volume of the test above (the file stays well under a minute on 2 cores).
        report_in_children(
            Brama(engine, lock_timeout=LOCK_TIMEOUT_S), tracker, reports=REPORTS // 2
        )
        with engine.connect() as connection:  # the host's own use of its engine goes on
            connection.exec_driver_sql("SELECT 1")
        assert tracker.strays == [] and tracker.invalidated == []
    finally:
        engine.dispose()


def test_a_fork_that_skips_pythons_handlers_is_caught_before_first_use(
    make_brama: Callable[..., Brama],
) -> None:
    """C code that calls ``fork()`` itself (uWSGI by default) runs no at-fork handler:
    brama_sql notices the new pid before the child's first use."""
    brama = make_brama(lock_timeout=LOCK_TIMEOUT_S)
    report_in_children(brama, Tracker(brama.engine), c_fork=True, reports=REPORTS // 2)


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_an_in_memory_database_is_per_process() -> None:
    """``sqlite://`` keeps its one connection in a child, which reaches the child's own copy of
    the database; a thread of the parent that held the gate at the fork does not block it."""
    brama = Brama("sqlite://", failure_threshold=10**6)
    brama.migrate()
    brama.register(IDENTIFIER)
    brama.failure(IDENTIFIER)
    holding, release = threading.Event(), threading.Event()

    def hold_the_gate() -> None:
        with brama._transactions.gate:
            holding.set()
            release.wait(WAIT_S)

    holder = threading.Thread(target=hold_the_gate)
    holder.start()
    try:
        assert holding.wait(WAIT_S)

        def work(answers: Connection) -> None:
            for _ in range(10):
                brama.failure(IDENTIFIER)
            answers.send(brama.status(IDENTIFIER).failure_count)
            verify(brama.engine, IDENTIFIER)

        with Children() as children:
            children.os_fork(work)
            (in_child,) = children.collect()
    finally:
        release.set()
        holder.join(WAIT_S)
    assert in_child == 11
    assert brama.status(IDENTIFIER).failure_count == 1, "the child wrote to its own copy"
    brama.dispose()


# -- gunicorn --preload ------------------------------------------------------------------------

WORKERS = 4
REQUESTS = 400
CLIENTS = 8


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
"""Opens URLs without any proxy the environment names."""


def get(port: int, path: str) -> tuple[int, str]:
    """``(status, body)`` of a GET; a refused or broken connection raises."""
    try:
        with DIRECT.open(f"http://127.0.0.1:{port}{path}", timeout=WAIT_S) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")


@contextlib.contextmanager
def gunicorn(url: str, log: Path) -> Iterator[int]:
    """Run ``fork_app`` under ``gunicorn --preload`` with :data:`WORKERS` workers; yield its
    port once every worker has booted and it answers. Stopped with SIGTERM on exit; killed,
    with its whole process group, if it does not stop in time."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "--preload",
        "-w",
        str(WORKERS),
        "-b",
        f"127.0.0.1:{port}",
        "--chdir",
        str(HERE),
        "--timeout",
        "30",
        "--graceful-timeout",
        "5",
        "fork_app:application",
    ]
    environment = {**os.environ, "BRAMA_SQL_FORK_APP_URL": url}
    with log.open("wb") as output:
        server = subprocess.Popen(
            command,
            stdout=output,
            stderr=subprocess.STDOUT,
            env=environment,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + WAIT_S
        while True:
            assert server.poll() is None, f"gunicorn exited:\n{log.read_text()}"
            booted = log.read_text().count("Booting worker with pid")
            with contextlib.suppress(OSError):
                if booted >= WORKERS and get(port, "/ready")[0] == 200:
                    break
            assert time.monotonic() < deadline, f"gunicorn did not come up:\n{log.read_text()}"
            time.sleep(0.1)
        yield port
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(10)
            pytest.fail(f"gunicorn did not stop on SIGTERM:\n{log.read_text()}")


def test_gunicorn_preload_workers_never_share_the_masters_connection(
    db_url: URL, make_brama: Callable[..., Brama], tmp_path: Path
) -> None:
    """The app builds its Brama, migrates, registers and asks ``available()`` in the master
    (``--preload``); the 4 workers it forks then answer 400 requests from 8 clients."""
    log = tmp_path / "gunicorn.log"
    outcomes = ["failure" if number % 2 else "success" for number in range(REQUESTS)]
    with gunicorn(url_of(db_url), log) as port, ThreadPoolExecutor(CLIENTS) as clients:
        answers = list(clients.map(lambda outcome: get(port, f"/?{outcome}"), outcomes))
    text = log.read_text()
    workers = {int(pid) for pid in re.findall(r"Booting worker with pid: (\d+)", text)}

    assert [status for status, _ in answers] == [200] * REQUESTS, text
    served = [tuple(map(int, body.split())) for _, body in answers]
    assert [strays for _, strays in served] == [0] * REQUESTS, (
        "a worker used a connection the master opened"
    )
    pids = Counter(pid for pid, _ in served)
    assert len(workers) == WORKERS
    assert set(pids) == workers, f"every worker serves some of the requests: {pids}"
    assert "Traceback" not in text, text

    brama = make_brama()
    status = brama.status("gunicorn")
    assert status.total_failures == REQUESTS // 2
    assert status.total_successes == REQUESTS // 2
    reports = [e for e in brama.events("gunicorn") if e.kind in (Kind.FAILURE, Kind.SUCCESS)]
    logged = Counter((int((e.actor or "").split(":")[1]), e.kind.value) for e in reports)
    assert logged == Counter(
        (pid, outcome) for (pid, _), outcome in zip(served, outcomes, strict=True)
    )
    verify(brama.engine, "gunicorn")
