"""The watchdog's thread: cuts what passed its deadline, sleeps until the earliest deadline, and
is parked (never waking, never asking for the GIL) in a process with nothing armed, so that a
bare C ``fork()`` of an idle process cannot inherit a thread waiting for the GIL."""

from __future__ import annotations

import ctypes
import linecache
import math
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import pytest

from brama_sql import watchdog

WAIT_S = 10.0
"""The bound on anything these tests wait for."""


class Interruptible:
    """Stands in for a sqlite3 connection: the watchdog cuts it by calling ``interrupt()``."""

    def __init__(self) -> None:
        self.interrupted = threading.Event()

    def interrupt(self) -> None:
        self.interrupted.set()


def wait_until(condition: Callable[[], bool]) -> None:
    """Wait (bounded) until the watchdog's thread has done what ``condition`` checks."""
    bound = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < bound, "the watchdog's thread never got there"
        time.sleep(0.01)


def wait_until_parked() -> None:
    """Wait (bounded) until the thread has nothing armed to sleep for."""
    wait_until(lambda: watchdog._sleeping_until == math.inf)


def blocked_in_wait() -> bool:
    """Whether the watchdog's thread is blocked on its condition's lock (it no longer runs
    Python code, so it does not hold or ask for the GIL)."""
    thread = watchdog._thread
    assert thread is not None and thread.ident is not None
    frame = sys._current_frames().get(thread.ident)
    if frame is None or frame.f_code.co_name != "wait":
        return False
    return "waiter.acquire()" in linecache.getline(frame.f_code.co_filename, frame.f_lineno)


def test_a_connection_past_its_deadline_is_cut_and_the_thread_parks_afterwards() -> None:
    connection = Interruptible()
    with watchdog.watching(watchdog.monotonic() + 0.05) as watch:
        watch.attach(connection)
        assert connection.interrupted.wait(WAIT_S), "the watchdog never cut the connection"
        assert watch.cut
    wait_until_parked()


def test_an_earlier_deadline_wakes_a_thread_sleeping_until_a_later_one() -> None:
    late, early = Interruptible(), Interruptible()
    with watchdog.watching(watchdog.monotonic() + 3600) as long_watch:
        long_watch.attach(late)
        with watchdog.watching(watchdog.monotonic() + 0.05) as short_watch:
            short_watch.attach(early)
            assert early.interrupted.wait(WAIT_S), "the earlier deadline was slept through"
        assert not late.interrupted.is_set() and not long_watch.cut
        wait_until(lambda: watchdog._sleeping_until == long_watch.deadline)


def test_a_connection_attached_after_its_deadline_is_cut_at_once() -> None:
    connection = Interruptible()
    with watchdog.watching(watchdog.monotonic() - 1) as watch:
        watch.attach(connection)
        assert connection.interrupted.is_set() and watch.cut


def test_a_call_that_ends_in_time_is_never_cut() -> None:
    connection = Interruptible()
    with watchdog.watching(watchdog.monotonic() + 0.2) as watch:
        watch.attach(connection)
    wait_until_parked()
    assert not connection.interrupted.is_set() and not watch.cut


def test_leaving_a_watch_waits_for_a_cut_in_progress() -> None:
    """The thread cuts under its lock, and leaving a ``watching`` block takes that lock: once
    out of the block, the call's connection is never cut, so it may be handed on (given back to
    a pool, used by another thread's call) right after."""
    connection = Interruptible()
    held, release = threading.Event(), threading.Event()

    def hold() -> None:  # as the thread holds it from its look at a watch to its cut
        with watchdog._wakeup_lock:
            held.set()
            release.wait(WAIT_S)

    holder = threading.Thread(target=hold)
    with watchdog.watching(watchdog.monotonic() + 3600) as watch:
        watch.attach(connection)
        holder.start()
        assert held.wait(WAIT_S)
        threading.Timer(0.2, release.set).start()
    assert release.is_set(), "the watch was disarmed while the thread could be cutting it"
    holder.join(WAIT_S)
    assert watch not in watchdog._armed.values()
    assert not connection.interrupted.is_set()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork (POSIX)")
def test_bare_forks_of_a_process_whose_watchdog_is_parked_never_hang() -> None:
    """The uWSGI pattern: start-up calls in the master, then workers forked by C code that runs
    none of Python's at-fork handlers. In a fresh interpreter (the threads other tests leave in
    this one are not brama_sql's to answer for): each child runs Python for a while (dropping
    and taking the GIL many times) and exits; a hung child fails the test instead of hanging
    it."""
    ran = subprocess.run(
        [sys.executable, __file__, "bare-forks"], capture_output=True, text=True, timeout=60
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert ran.stdout.strip() == "20 children exited"


def bare_forks(children: int = 20) -> list[int]:
    """Park the watchdog, fork ``children`` with libc's ``fork()``; the pids that hung."""
    with watchdog.watching(watchdog.monotonic() + 0.05):
        pass
    wait_until_parked()
    wait_until(blocked_in_wait)  # parking runs some Python code after the flag is set
    libc_fork = ctypes.PyDLL(None).fork
    libc_fork.restype = ctypes.c_int
    forked = []
    for _ in range(children):
        pid = libc_fork()
        if pid == 0:  # the child
            try:
                total = sum(i * i for i in range(200_000))
                os._exit(0 if total else 1)
            finally:
                os._exit(1)
        forked.append(pid)
    bound = time.monotonic() + WAIT_S
    hung = []
    for pid in forked:
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                assert os.waitstatus_to_exitcode(status) == 0
                break
            if time.monotonic() > bound:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                hung.append(pid)
                break
            time.sleep(0.01)
    return hung


if __name__ == "__main__" and sys.argv[1:] == ["bare-forks"]:
    hung = bare_forks()
    assert not hung, f"bare-forked children hung: {hung}; threads: {threading.enumerate()}"
    print("20 children exited")
