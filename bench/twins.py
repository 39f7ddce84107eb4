"""The hand-written twins of brama_sql's operations: the same logical work in the fewest
statements, once with SQLAlchemy Core on a default engine (:class:`CoreTwin`) and once through
the bare driver on one persistent connection (:class:`DriverTwin`: psycopg, PyMySQL, sqlite3).

The work of each operation, on the tables brama_sql created:

- ``available``: one SELECT of the row's state, ``opened_at`` and expiry; open circuits whose
  expiry has elapsed count as half-open (available), as brama_sql's lazy expiry does.
- ``success`` / ``failure``: one transaction that locks the row (``SELECT ... FOR UPDATE``;
  ``BEGIN IMMEDIATE`` on SQLite), updates its failure count and its tallies (the count of
  the report's kind, its latest time and the latest event's time, as brama_sql keeps them
  since revision 0004) and inserts the event brama_sql would log.
- ``status``: one SELECT of the 26 columns of the row that the 31 fields of a
  ``ConnectionStatus`` show or derive from (its circuit, every setting and policy, the rate
  window, the tallies of the log's totals and latest times), turned into those 31 fields with
  the values brama_sql gives: an open circuit whose open period (``open_period``, else the
  expiry) has elapsed is half-open since then, ``current_expiry`` and ``next_probe_at`` follow
  the open period, ``probe_timeout`` falls back to the expiry. The twins write no tail (every
  report folds its tallies), so they read none; brama_sql also counts the tail of healthy
  successes appended after ``tallied_through``, none in the rows the benchmark reads. (Until
  they were brought up to date after revision 0005 added the backoff and rate policies, the
  twins read 16 columns and filled the 18 fields a status had before it, so the ``status``
  and ``connections`` ratios of the run at commit 8b00aa6 are against that lighter work;
  before revision 0004 they counted the log here, with a correlated subquery per aggregate.)
- ``connections``: the same SELECT over every row, ordered by scope and identifier.
- ``guarded``: ``available`` then ``success``.

The twins only do what the benchmark exercises: they report on closed circuits that stay
closed, and raise :class:`TwinError` on anything else rather than take a shortcut (a status
with a rate window stored, even an empty one: no benchmark connection has a rate policy).
"""

from __future__ import annotations

import importlib
import json
import os
import re
import socket
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol

from sqlalchemy import (
    Select,
    bindparam,
    create_engine,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import URL

from bench.fleet import SCOPE
from brama_sql.schema import connections, events
from brama_sql.types import UTCDateTime

Status = dict[str, Any]


class TwinError(Exception):
    """A twin met a state the benchmark never puts a circuit in."""


def now() -> datetime:
    """The time, read as brama_sql's default clock reads it."""
    return datetime.now(timezone.utc)


def actor() -> str:
    """Who writes a twin's events (brama_sql writes ``host:pid:instance:thread``)."""
    return f"{socket.gethostname()}:{os.getpid()}:twin"


def is_available(state: str, opened_at: datetime | None, expiry: float, at: datetime) -> bool:
    """Whether a circuit lets a call through at ``at`` (permits are never limited here)."""
    if state != "open":
        return True
    assert opened_at is not None
    return opened_at + timedelta(seconds=expiry) <= at


def reported_count(kind: str, state: str, failure_count: int, threshold: int) -> int:
    """A closed circuit's failure count after a report; the circuit must stay closed."""
    if state != "closed":
        raise TwinError(f"the twins report on closed circuits only, not on a {state} one")
    count = 0 if kind == "success" else failure_count + 1
    if count >= threshold:
        raise TwinError("a failure reached the threshold: the benchmark keeps circuits closed")
    return count


def _latest(*times: datetime | None) -> datetime | None:
    return max((time for time in times if time is not None), default=None)


def tally_changes(
    kind: str,
    at: datetime,
    last_success_at: datetime | None,
    last_event_at: datetime | None,
    tail: int,
    tail_latest: datetime | None,
) -> dict[str, Any]:
    """How a report at ``at`` changes the row's tallies, folding in the tail of healthy
    successes brama_sql appended under the shared lock since ``tallied_through`` (as its own
    exclusive writes do)."""
    success = kind == "success"
    return {
        "successes": tail + success,
        "failures": int(not success),
        "last_success_at": _latest(last_success_at, tail_latest, at if success else None),
        "last_failure_at": None if success else at,
        "last_event_at": _latest(last_event_at, tail_latest, at),
    }


STATUS_COLUMNS = (
    "identifier",
    "scope",
    "state",
    "failure_count",
    "opened_at",
    "open_period",
    "window_counts",
    "failure_threshold",
    "expiry",
    "half_open_max_calls",
    "probe_timeout",
    "expiry_strategy",
    "backoff_factor",
    "max_expiry",
    "failure_rate_threshold",
    "rate_window",
    "minimum_calls",
    "slow_call_duration",
    "slow_call_rate_threshold",
    "metadata",
    "registered_at",
    "successes",
    "last_success_at",
    "failures",
    "last_failure_at",
    "last_transition_at",
)
"""The ``brama_connections`` columns of the status query, in order: every one a field of a
``ConnectionStatus`` shows or derives from (brama_sql's status also reads ``episode``, which
no field depends on)."""
TIMES = frozenset(
    {"opened_at", "registered_at", "last_success_at", "last_failure_at", "last_transition_at"}
)
JSON_COLUMNS = frozenset({"metadata", "window_counts"})
"""The status query's JSON documents (text from PyMySQL and sqlite3)."""


def status_of(values: Sequence[Any], at: datetime) -> Status:
    """The 31 fields of a ``ConnectionStatus`` from a row of the status query (typed values)
    at ``at``, as brama_sql gives them."""
    row = dict(zip(STATUS_COLUMNS, values, strict=True))
    state = row["state"]
    changed_at = row["last_transition_at"] or row["registered_at"]
    current_expiry = next_probe_at = None
    if state in ("open", "half_open"):
        period = row["expiry"] if row["open_period"] is None else row["open_period"]
        current_expiry = period
        if state == "open":
            next_probe_at = row["opened_at"] + timedelta(seconds=period)
            if next_probe_at <= at:  # the open period elapsed: half-open since then
                state, changed_at, next_probe_at = "half_open", next_probe_at, None
    elif row["window_counts"] is not None and state in ("closed", "unknown"):
        raise TwinError("the benchmark's connections have no rate policy, so no window counts")
    reports = row["successes"] + row["failures"]
    return {
        "identifier": row["identifier"],
        "scope": row["scope"] or None,
        "state": state,
        "failure_count": row["failure_count"],
        "last_failure_time": row["last_failure_at"],
        "last_success_time": row["last_success_at"],
        "opened_at": row["opened_at"],
        "metadata": row["metadata"],
        "failure_threshold": row["failure_threshold"],
        "expiry": row["expiry"],
        "registered_at": row["registered_at"],
        "state_changed_at": changed_at,
        "total_successes": row["successes"],
        "total_failures": row["failures"],
        "success_rate": row["successes"] / reports if reports else None,
        "time_since_state_change": max(0.0, (at - changed_at).total_seconds()),
        "half_open_max_calls": row["half_open_max_calls"],
        "probe_timeout": row["expiry"] if row["probe_timeout"] is None else row["probe_timeout"],
        "expiry_strategy": row["expiry_strategy"],
        "backoff_factor": row["backoff_factor"],
        "max_expiry": row["max_expiry"],
        "current_expiry": current_expiry,
        "next_probe_at": next_probe_at,
        "failure_rate_threshold": row["failure_rate_threshold"],
        "window": row["rate_window"],
        "minimum_calls": row["minimum_calls"],
        "slow_call_duration": row["slow_call_duration"],
        "slow_call_rate_threshold": row["slow_call_rate_threshold"],
        "window_calls": 0,
        "window_failures": 0,
        "window_slow_calls": 0,
    }


class Twin(Protocol):
    """What every twin does (:class:`CoreTwin`, :class:`DriverTwin`)."""

    def available(self, identifier: str) -> bool: ...
    def success(self, identifier: str) -> None: ...
    def failure(self, identifier: str) -> None: ...
    def status(self, identifier: str) -> Status: ...
    def connections(self) -> list[Status]: ...
    def close(self) -> None: ...


# -- SQLAlchemy Core ------------------------------------------------------------------------


def _core_metrics() -> Select[Any]:
    return select(*(connections.c[name] for name in STATUS_COLUMNS))


_IDENTITY = (connections.c.identifier == bindparam("identifier")) & (
    connections.c.scope == bindparam("scope")
)
CORE_AVAILABLE = select(connections.c.state, connections.c.opened_at, connections.c.expiry).where(
    _IDENTITY
)
CORE_LOCK = (
    select(
        connections.c.id,
        connections.c.state,
        connections.c.failure_count,
        connections.c.failure_threshold,
        connections.c.tallied_through,
        connections.c.last_success_at,
        connections.c.last_event_at,
    )
    .where(_IDENTITY)
    .with_for_update()
)
CORE_TAIL = select(func.count(), func.max(events.c.occurred_at)).where(
    events.c.connection_id == bindparam("row_id"), events.c.id > bindparam("through")
)
CORE_TALLY = (
    update(connections)
    .where(connections.c.id == bindparam("row_id"))
    .values(
        failure_count=bindparam("new_count"),
        successes=connections.c.successes + bindparam("successes"),
        failures=connections.c.failures + bindparam("failures"),
        last_success_at=bindparam("last_success_at"),
        last_failure_at=func.coalesce(
            bindparam("last_failure_at", type_=UTCDateTime()), connections.c.last_failure_at
        ),
        last_event_at=bindparam("last_event_at"),
        tallied_through=bindparam("event_id"),
    )
)
CORE_EVENT = insert(events)
CORE_STATUS = _core_metrics().where(_IDENTITY)
CORE_CONNECTIONS = _core_metrics().order_by(connections.c.scope, connections.c.identifier)


class CoreTwin:
    """The operations written with SQLAlchemy Core on ``create_engine(url)``, defaults and all
    (on SQLite it begins its writes with ``BEGIN IMMEDIATE``, SQLite's row lock)."""

    def __init__(self, url: URL) -> None:
        self.engine = create_engine(url)
        self.sqlite = self.engine.dialect.name == "sqlite"
        self.actor = actor()

    def available(self, identifier: str) -> bool:
        with self.engine.connect() as conn:
            row = conn.execute(
                CORE_AVAILABLE, {"identifier": identifier, "scope": SCOPE}
            ).one_or_none()
        return row is not None and is_available(row.state, row.opened_at, row.expiry, now())

    def success(self, identifier: str) -> None:
        self._report(identifier, "success", None)

    def failure(self, identifier: str) -> None:
        self._report(identifier, "failure", "bench")

    def _report(self, identifier: str, kind: str, reason: str | None) -> None:
        with self.engine.begin() as conn:
            if self.sqlite:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            row = conn.execute(CORE_LOCK, {"identifier": identifier, "scope": SCOPE}).one()
            at = now()
            count = reported_count(kind, row.state, row.failure_count, row.failure_threshold)
            tail, tail_latest = conn.execute(
                CORE_TAIL, {"row_id": row.id, "through": row.tallied_through}
            ).one()
            changes = tally_changes(
                kind, at, row.last_success_at, row.last_event_at, tail, tail_latest
            )
            inserted = conn.execute(
                CORE_EVENT,
                {
                    "connection_id": row.id,
                    "identifier": identifier,
                    "scope": SCOPE,
                    "kind": kind,
                    "occurred_at": at,
                    "reason": reason,
                    "failure_count": count,
                    "probe": False,
                    "actor": self.actor,
                },
            )
            assert inserted.inserted_primary_key is not None
            conn.execute(
                CORE_TALLY,
                {
                    "row_id": row.id,
                    "new_count": count,
                    "event_id": inserted.inserted_primary_key[0],
                    **changes,
                },
            )

    def status(self, identifier: str) -> Status:
        with self.engine.connect() as conn:
            row = conn.execute(CORE_STATUS, {"identifier": identifier, "scope": SCOPE}).one()
        return status_of(row, now())

    def connections(self) -> list[Status]:
        with self.engine.connect() as conn:
            rows = conn.execute(CORE_CONNECTIONS).all()
        at = now()
        return [status_of(row, at) for row in rows]

    def close(self) -> None:
        self.engine.dispose()


# -- the bare driver ------------------------------------------------------------------------

_METRICS_SQL = f"SELECT {', '.join(STATUS_COLUMNS)} FROM brama_connections "
DRIVER_SQL = {
    "available": "SELECT state, opened_at, expiry FROM brama_connections "
    "WHERE identifier = %(identifier)s AND scope = %(scope)s",
    "lock": "SELECT id, state, failure_count, failure_threshold, tallied_through, "
    "last_success_at, last_event_at FROM brama_connections "
    "WHERE identifier = %(identifier)s AND scope = %(scope)s FOR UPDATE",
    "tail": "SELECT COUNT(*), MAX(occurred_at) FROM brama_events "
    "WHERE connection_id = %(id)s AND id > %(through)s",
    "tally": "UPDATE brama_connections SET failure_count = %(failure_count)s, "
    "successes = successes + %(successes)s, failures = failures + %(failures)s, "
    "last_success_at = %(last_success_at)s, "
    "last_failure_at = COALESCE(%(last_failure_at)s, last_failure_at), "
    "last_event_at = %(last_event_at)s, tallied_through = %(event_id)s WHERE id = %(id)s",
    "event": "INSERT INTO brama_events (connection_id, identifier, scope, kind, occurred_at, "
    "reason, failure_count, probe, actor) VALUES (%(connection_id)s, %(identifier)s, "
    "%(scope)s, %(kind)s, %(occurred_at)s, %(reason)s, %(failure_count)s, %(probe)s, %(actor)s)",
    "status": _METRICS_SQL + "WHERE identifier = %(identifier)s AND scope = %(scope)s",
    "connections": _METRICS_SQL + "ORDER BY scope, identifier",
}
"""The statements, with pyformat parameters (psycopg, PyMySQL); SQLite gets ``:name`` ones and
no ``FOR UPDATE`` (its transaction's ``BEGIN IMMEDIATE`` locks)."""
SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"
"""How SQLAlchemy stores a datetime in SQLite, and so how brama_sql's rows hold them."""


def _sqlite_sql(statement: str) -> str:
    return re.sub(r"%\((\w+)\)s", r":\1", statement.replace(" FOR UPDATE", ""))


class DriverTwin:
    """The operations on one persistent connection of the bare driver, in autocommit mode with
    explicit ``BEGIN`` / ``COMMIT`` around the writes (psycopg prepares repeated statements
    itself, as it does by default)."""

    def __init__(self, url: URL) -> None:
        self.dialect = url.get_backend_name()
        self.actor = actor()
        self.begin = "BEGIN"
        self.sql = dict(DRIVER_SQL)
        self.conn: Any
        self.cursor: Any = None
        if self.dialect == "postgresql":
            import psycopg

            self.sql["event"] += " RETURNING id"
            self.conn = psycopg.connect(
                host=url.host,
                port=url.port or 5432,
                user=url.username,
                password=url.password,
                dbname=url.database,
                autocommit=True,
            )
        elif self.dialect == "mysql":
            pymysql = importlib.import_module("pymysql")  # no type stubs
            self.conn = pymysql.connect(
                host=url.host,
                port=url.port or 3306,
                user=url.username or "",
                password=url.password or "",
                database=url.database,
                charset="utf8mb4",
                autocommit=True,
            )
            self.cursor = self.conn.cursor()
        elif self.dialect == "sqlite":
            assert url.database is not None
            self.conn = sqlite3.connect(url.database, isolation_level=None, timeout=5.0)
            self.begin = "BEGIN IMMEDIATE"
            self.sql = {name: _sqlite_sql(statement) for name, statement in DRIVER_SQL.items()}
        else:
            raise ValueError(f"no driver twin for {self.dialect}")

    def _execute(self, name: str, parameters: Mapping[str, Any] | None = None) -> Any:
        """Run a statement; return something with ``fetchone()`` and ``fetchall()``."""
        if self.cursor is not None:
            self.cursor.execute(self.sql[name], parameters)
            return self.cursor
        return self.conn.execute(self.sql[name], parameters or {})

    def _command(self, statement: str) -> None:
        if self.cursor is not None:
            self.cursor.execute(statement)
        else:
            self.conn.execute(statement)

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._command(self.begin)
        try:
            yield
        except BaseException:
            self._command("ROLLBACK")
            raise
        self._command("COMMIT")

    def _time(self, value: Any) -> datetime | None:
        """A time read from the database, as an aware UTC datetime."""
        if value is None or self.dialect == "postgresql":
            return value  # type: ignore[no-any-return]
        if self.dialect == "sqlite":
            value = datetime.fromisoformat(value)
        return value.replace(tzinfo=timezone.utc)  # type: ignore[no-any-return]

    def _stored_time(self, value: datetime) -> Any:
        """A time as the column stores it (naive UTC on MySQL, SQLAlchemy's text on SQLite)."""
        if self.dialect == "postgresql":
            return value
        if self.dialect == "sqlite":
            return value.strftime(SQLITE_TIME)
        return value.replace(tzinfo=None)

    def _status(self, values: Sequence[Any], at: datetime) -> Status:
        typed = list(values)
        for index, column in enumerate(STATUS_COLUMNS):
            if column in TIMES:
                typed[index] = self._time(typed[index])
            elif column in JSON_COLUMNS and isinstance(typed[index], str):
                typed[index] = json.loads(typed[index])
        return status_of(typed, at)

    def available(self, identifier: str) -> bool:
        row = self._execute("available", {"identifier": identifier, "scope": SCOPE}).fetchone()
        if row is None:
            return False
        state, opened_at, expiry = row
        return is_available(state, self._time(opened_at), expiry, now())

    def success(self, identifier: str) -> None:
        self._report(identifier, "success", None)

    def failure(self, identifier: str) -> None:
        self._report(identifier, "failure", "bench")

    def _report(self, identifier: str, kind: str, reason: str | None) -> None:
        with self._transaction():
            row = self._execute("lock", {"identifier": identifier, "scope": SCOPE}).fetchone()
            if row is None:
                raise TwinError(f"{identifier} is not registered")
            connection_id, state, failure_count, threshold, through, last_success, last_event = row
            at = now()
            count = reported_count(kind, state, failure_count, threshold)
            tail, tail_latest = self._execute(
                "tail", {"id": connection_id, "through": through}
            ).fetchone()
            changes = tally_changes(
                kind,
                at,
                self._time(last_success),
                self._time(last_event),
                tail,
                self._time(tail_latest),
            )
            cursor = self._execute(
                "event",
                {
                    "connection_id": connection_id,
                    "identifier": identifier,
                    "scope": SCOPE,
                    "kind": kind,
                    "occurred_at": self._stored_time(at),
                    "reason": reason,
                    "failure_count": count,
                    "probe": False,
                    "actor": self.actor,
                },
            )
            event_id = cursor.fetchone()[0] if self.dialect == "postgresql" else cursor.lastrowid
            self._execute(
                "tally",
                {
                    "failure_count": count,
                    "id": connection_id,
                    "event_id": event_id,
                    **{
                        name: self._stored_time(value) if isinstance(value, datetime) else value
                        for name, value in changes.items()
                    },
                },
            )

    def status(self, identifier: str) -> Status:
        row = self._execute("status", {"identifier": identifier, "scope": SCOPE}).fetchone()
        if row is None:
            raise TwinError(f"{identifier} is not registered")
        return self._status(row, now())

    def connections(self) -> list[Status]:
        rows = self._execute("connections").fetchall()
        at = now()
        return [self._status(row, at) for row in rows]

    def close(self) -> None:
        self.conn.close()
