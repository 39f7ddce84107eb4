"""Fork safety: what brama_sql resets in a child process right after a fork.

A process that forks (gunicorn ``--preload``, uWSGI without ``lazy-apps``, Celery's prefork pool,
:mod:`multiprocessing` with the ``fork`` start method, a plain :func:`os.fork`) hands the child a
copy of every pooled database connection it had: parent and child would then talk over one
socket and read each other's answers. The child must never use a connection its parent opened,
and must not close one either (closing may tell the server to end the parent's session).

This module keeps a weak registry of bound methods to call in a forked child (:func:`register`;
an object that was garbage-collected is not kept alive for it) and installs one
:func:`os.register_at_fork` handler when it is imported, which calls each live one in the child.
:func:`renew_pool` is SQLAlchemy's documented recipe for an engine in a child,
``engine.dispose(close=False)``: the engine gets a fresh, empty pool and the parent's
connections are never touched; the abandoned pool is kept alive in the child so that no
finalizer of the parent's connections runs there. A fork that skips Python's at-fork handlers
(uWSGI by default: its C code calls ``fork()`` itself) is caught by the objects' own process id
checks, which call :func:`renew_pool` on their first use in the child.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import weakref
from collections.abc import Callable

from sqlalchemy.engine import Engine
from sqlalchemy.pool import Pool

logger = logging.getLogger("brama_sql")

Reset = Callable[[], None]

_callbacks: dict[int, weakref.WeakMethod[Reset]] = {}
"""What to call in a forked child, by registration number: weak references to bound methods."""
_numbers = itertools.count()
_abandoned: list[object] = []
"""The pools (and read pools) this process took over from its parent, kept alive: were one
garbage-collected, its DBAPI connections' finalizers could close the parent's connections from
the child."""
_renewed: weakref.WeakKeyDictionary[Pool, int] = weakref.WeakKeyDictionary()
"""The pools :func:`renew_pool` created, and the process that created each."""
_lock = threading.Lock()
"""Serialises :func:`renew_pool` (created again in each forked child: a thread of the parent
may have held it at the moment of the fork)."""


def register(method: Reset) -> None:
    """Call the bound ``method`` in every child forked from now on, right after the fork (in
    the child's only thread, before the fork call returns there). Only a weak reference is kept:
    registering does not keep the object alive."""
    number = next(_numbers)

    def forget(_dead: object) -> None:
        _callbacks.pop(number, None)

    _callbacks[number] = weakref.WeakMethod(method, forget)


def abandon(holder: object) -> None:
    """Keep ``holder`` (something that holds the parent's connections) alive in this forked
    child for good, so that no finalizer of those connections ever runs here."""
    _abandoned.append(holder)


def renew_pool(engine: Engine) -> None:
    """Give ``engine`` a fresh pool of its own in a forked child, leaving every connection of
    the parent's pool untouched (``engine.dispose(close=False)``), unless this process already
    did. Safe for any engine, the host application's too: SQLAlchemy recommends exactly this
    for every engine a child inherits. Do not call it for a ``StaticPool`` engine whose one
    connection is an in-memory SQLite database: the child has its own copy of that database,
    and only that connection reaches it."""
    pid = os.getpid()
    with _lock:
        if _renewed.get(engine.pool) == pid:
            return
        inherited = engine.pool
        engine.dispose(close=False)
        _abandoned.append(inherited)
        _renewed[engine.pool] = pid
    logger.debug("process %d: a fresh connection pool for %r after a fork", pid, engine)


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.Lock()
    for reference in list(_callbacks.values()):
        method = reference()
        if method is None:
            continue
        try:
            method()
        except Exception:  # one failing reset must not leave the others undone
            logger.exception("brama_sql could not reset %r after a fork", method)


if hasattr(os, "register_at_fork"):  # POSIX only; Windows has no fork
    os.register_at_fork(after_in_child=_after_fork_in_child)
