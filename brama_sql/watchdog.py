"""The watchdog: every call ends by its deadline, even when the server stops answering.

A server that goes silent on an open connection (hung, partitioned away, a black-holed route)
blocks the client's read for as long as the driver lets it: libpq has no read timeout at all,
and PyMySQL's waits out its whole read timeout. A call arms the watchdog with its deadline
before it asks the pool for a connection (:func:`watching`); the connection it gets is attached
to the watch (:meth:`Watch.attach`), and so is one the pool makes for it meanwhile, before the
dialect's first queries and the connect-time session settings run (:func:`adopt`, called from
the pool's ``first_connect`` and ``connect`` events). One daemon thread, started on first use in
each process, sleeps until the earliest deadline among the armed watches and cuts the connection
of those whose deadline passed: it shuts its socket down (psycopg 3 and PyMySQL) or interrupts
the statement (sqlite3). The blocked call then fails at once with the driver's own error, and the
connection is thrown away. Arming costs a dictionary update under a lock (and a wake-up of the
thread only when the new deadline is earlier than the one it sleeps until); nothing runs per call
on the watchdog's thread.

Not covered: the driver's own connection handshake (bounded by its connect timeout), a host
engine's ``pool_pre_ping`` (runs before the connection is handed out), and other drivers.

The thread never wakes in a process with nothing armed (after the last deadline it slept for):
it waits on a condition with no timeout. That matters beyond saving CPU. A process forked by C
code that skips Python's at-fork handlers (uWSGI's workers, a bare ``fork()``) inherits the
interpreter's lock state as it was: had a thread been waiting for the GIL at that instant, the
child's only thread would wait forever to hand the GIL over. A parent whose start-up calls are
done has a watchdog that never asks for the GIL, so forking it is safe.
"""

from __future__ import annotations

import contextvars
import itertools
import logging
import math
import os
import socket
import threading
import time
from typing import Any

logger = logging.getLogger("brama_sql")

_REAL_MONOTONIC = (time.monotonic,)
"""The monotonic clock as it was when brama_sql was imported, kept in a tuple: a test that
freezes time (freezegun replaces ``time.monotonic`` and every module attribute bound to it)
must not move call deadlines, or frozen time jumping forward would cut every connection."""


def monotonic() -> float:
    """Seconds of a clock that only goes forward, for call deadlines (never frozen by tests)."""
    return _REAL_MONOTONIC[0]()


class Watch:
    """One armed call: its deadline (:func:`monotonic`), the connection it uses once it has
    one, and whether the watchdog fired."""

    __slots__ = ("cut", "dbapi_connection", "deadline")

    def __init__(self, dbapi_connection: Any, deadline: float) -> None:
        self.dbapi_connection = dbapi_connection
        self.deadline = deadline
        self.cut = False

    def attach(self, dbapi_connection: Any) -> None:
        """The call uses ``dbapi_connection`` from now on; cut it at once if the deadline has
        already passed."""
        self.dbapi_connection = dbapi_connection
        if self.cut or self.deadline <= monotonic():
            self.cut = True
            cut(dbapi_connection)


_armed: dict[int, Watch] = {}
_current: contextvars.ContextVar[Watch | None] = contextvars.ContextVar(
    "brama_sql_watch", default=None
)
"""The watch of the call running in this thread, or in this asyncio task (a context
variable: tasks sharing a thread, and the greenlets SQLAlchemy runs them in, each see their
own), for :func:`adopt`."""
_numbers = itertools.count()
_lock = threading.Lock()
_wakeup_lock = threading.Lock()
_wakeup = threading.Condition(_wakeup_lock)
"""Guards :data:`_armed` insertions against the thread's look at them, and wakes the thread
(arming takes its lock, :data:`_wakeup_lock`, directly: the condition's ``with`` is a Python
call more)."""
_sleeping_until = math.inf
"""The deadline the thread sleeps until (infinite while nothing is armed)."""
_thread: threading.Thread | None = None
_pid = 0
_forked_into = 0
"""The process Python's at-fork handlers last ran in (see :func:`_after_fork_in_child`)."""


class watching:  # used as a function: ``with watching(deadline) as watch``
    """Cut the connection the block uses (see :meth:`Watch.attach` and :func:`adopt`) if the
    block is still running at ``deadline``. (A class, not a generator: every call enters one,
    and a generator-based context manager costs a few microseconds more.)"""

    __slots__ = ("number", "outer", "pid", "watch")

    def __init__(self, deadline: float, pid: int | None = None) -> None:
        self.watch = Watch(None, deadline)
        self.pid = pid
        """This process's id if the caller just read it (else read here)."""
        self.number: int | None = None
        self.outer: contextvars.Token[Watch | None] | None = None

    def __enter__(self) -> Watch:
        watch = self.watch
        if not _start(self.pid):
            return watch  # a bare fork's child: no watchdog (see _start)
        self.number = number = next(_numbers)
        self.outer = _current.set(watch)
        with _wakeup_lock:
            _armed[number] = watch
            if watch.deadline < _sleeping_until:
                _wakeup.notify()
        return watch

    def __exit__(self, *_exception: object) -> None:
        if self.number is not None:
            # The thread cuts under this lock: once disarmed here, the watch is never cut, so
            # the caller may hand its connection to another user right after the block.
            with _wakeup_lock:
                _armed.pop(self.number, None)
        if self.outer is not None:
            _current.reset(self.outer)


def adopt(dbapi_connection: Any, _record: Any = None) -> None:
    """A pool event listener (``first_connect``, ``connect``): a connection being made for
    the call running in this thread is covered by that call's watch from now on."""
    watch = _current.get()
    if watch is not None:
        watch.attach(dbapi_connection)


def cut(dbapi_connection: Any) -> None:
    """End whatever ``dbapi_connection`` is waiting for: shut its socket down, or interrupt
    an SQLite statement. The connection is unusable afterwards (except SQLite's).

    An asyncio driver's connection (wrapped in SQLAlchemy's adapter) is cut the same way: its
    socket is shut down under the event loop (psycopg's async connection, aiomysql),
    which then sees the connection end; aiosqlite's SQLite connection is interrupted."""
    try:
        driver = getattr(dbapi_connection, "driver_connection", None)
        if driver is not None and driver is not dbapi_connection:
            _cut_async(driver)
            return
        pgconn = getattr(dbapi_connection, "pgconn", None)  # psycopg 3
        if pgconn is not None:
            with socket.socket(fileno=os.dup(pgconn.socket)) as duplicate:
                duplicate.shutdown(socket.SHUT_RDWR)
            return
        sock = getattr(dbapi_connection, "_sock", None)  # PyMySQL
        if sock is not None:
            sock.shutdown(socket.SHUT_RDWR)
            return
        interrupt = getattr(dbapi_connection, "interrupt", None)  # sqlite3
        if interrupt is not None:
            interrupt()
    except Exception:  # closed meanwhile: nothing left to cut
        logger.debug("watchdog: %r was already closed", dbapi_connection, exc_info=True)


def _cut_async(driver: Any) -> None:
    """Cut an asyncio driver's connection from the watchdog's thread."""
    if getattr(driver, "pgconn", None) is not None:  # psycopg 3's AsyncConnection
        cut(driver)
        return
    sqlite = getattr(driver, "_conn", None)  # aiosqlite: the sqlite3 connection in its thread
    if sqlite is not None and hasattr(sqlite, "interrupt"):
        sqlite.interrupt()
        return
    writer = getattr(driver, "_writer", None)  # aiomysql: an asyncio stream
    transport = getattr(writer, "transport", None)
    raw = None if transport is None else transport.get_extra_info("socket")
    if raw is not None:
        with socket.socket(fileno=os.dup(raw.fileno())) as duplicate:
            duplicate.shutdown(socket.SHUT_RDWR)


def _start(pid: int | None = None) -> bool:
    """Start the watchdog's thread in this process (whose id is ``pid``, if given) unless it
    runs (threads do not survive a fork, so a forked child starts its own on first use);
    whether this process has one."""
    global _thread, _pid
    pid = os.getpid() if pid is None else pid
    if _thread is not None and _pid == pid:
        return True
    if _thread is not None and _forked_into != pid:
        # A fork in C code that ran none of Python's at-fork handlers (a bare fork()): Python's
        # threading is not safe to use in such a child (its locks may be held by threads that
        # do not exist here), so no watchdog: calls are bounded by the drivers' timeouts.
        return False
    with _lock:
        if _thread is not None and _pid == os.getpid():
            return True
        _armed.clear()  # a forked child inherits its parent's entries, none of them its own
        _thread = threading.Thread(target=_patrol, name="brama_sql-watchdog", daemon=True)
        _pid = os.getpid()
        _thread.start()
        return True


def _after_fork_in_child() -> None:
    global _lock, _wakeup, _wakeup_lock, _sleeping_until, _forked_into
    _lock = threading.Lock()  # a thread of the parent may have held them at the fork
    _wakeup_lock = threading.Lock()
    _wakeup = threading.Condition(_wakeup_lock)
    _sleeping_until = math.inf
    _forked_into = os.getpid()


if hasattr(os, "register_at_fork"):  # POSIX only
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _patrol() -> None:
    global _sleeping_until
    with _wakeup:
        while True:
            now = monotonic()
            earliest = math.inf
            for watch in list(_armed.values()):
                if watch.cut:
                    continue
                if watch.deadline > now:
                    earliest = min(earliest, watch.deadline)
                    continue
                watch.cut = True
                logger.warning("brama_sql: a database call passed its time bound; cutting it")
                if watch.dbapi_connection is not None:
                    cut(watch.dbapi_connection)
            _sleeping_until = earliest
            # Parked (no timeout) while nothing is armed; else until the earliest deadline. A
            # watch disarmed meanwhile costs one wake-up at its deadline, nothing more.
            _wakeup.wait(None if earliest == math.inf else earliest - now)
