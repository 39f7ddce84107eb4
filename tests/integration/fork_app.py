"""A plain WSGI application for the gunicorn ``--preload`` test of ``test_fork.py``.

At import time (under ``--preload``: in the gunicorn master, before it forks its workers) it
builds a :class:`Brama` on the URL in ``BRAMA_SQL_FORK_APP_URL``, migrates, registers and asks
``available()`` once, so that the master's pool holds an open connection every worker inherits.
Each request asks ``available()``, then reports the outcome named by the query string
(``failure`` or ``success``) and answers 200, or 503 when refused (a call that raises gives
gunicorn's 500). The body is the worker's pid and how many times that worker has checked out a
pooled connection that another process had opened (it must stay 0).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import event

from brama_sql import Brama

IDENTIFIER = "gunicorn"
URL_VARIABLE = "BRAMA_SQL_FORK_APP_URL"

brama = Brama(os.environ[URL_VARIABLE], failure_threshold=10**6)
strays: list[int] = []
"""The pids that opened connections this process checked out while it was not theirs."""


@event.listens_for(brama.engine, "connect")
def _tag(_dbapi_connection: Any, record: Any) -> None:
    record.info["opened_by"] = os.getpid()


@event.listens_for(brama.engine, "checkout")
def _check(_dbapi_connection: Any, record: Any, _proxy: Any) -> None:
    if record.info.get("opened_by") != os.getpid():
        strays.append(record.info.get("opened_by", -1))


brama.migrate()
brama.register(IDENTIFIER, exist_ok=True)
brama.available(IDENTIFIER)


def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """Ask, report the outcome the query string names, answer ``<pid> <strays>``; the path
    ``/ready`` answers without touching the database (the test polls it until gunicorn is up)."""
    outcome = environ.get("QUERY_STRING", "")
    if environ.get("PATH_INFO") == "/ready":
        status = "200 OK"
    elif brama.available(IDENTIFIER):
        if outcome == "failure":
            brama.failure(IDENTIFIER, reason="fork test")
        else:
            brama.success(IDENTIFIER)
        status = "200 OK"
    else:
        status = "503 Service Unavailable"
    body = f"{os.getpid()} {len(strays)}\n".encode()
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
