"""Shared helpers of the integration tests: checks that read the brama_sql tables directly.

The helpers are fixtures that return functions, so test modules need not import a conftest.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import create_engine, func, select
from sqlalchemy.engine import URL, Connection

from brama_sql import AsyncBrama, Brama
from brama_sql.bridge import ASYNC_DRIVERS
from brama_sql.circuit import Circuit, Settings
from brama_sql.replay import ReplayError, verify
from brama_sql.schema import connections, events, stored_scope

LogCheck = Callable[..., Circuit | None]
RowCounts = Callable[[Brama], tuple[int, int]]
RowReader = Callable[..., "dict[str, Any] | None"]


def read_row(brama: Brama, identifier: str, scope: str | None = None) -> dict[str, Any] | None:
    """The ``brama_connections`` row of a connection as a dict, or ``None`` when it has none."""
    query = select(connections).where(
        (connections.c.identifier == identifier) & (connections.c.scope == stored_scope(scope))
    )
    with brama.engine.connect() as conn:
        row = conn.execute(query).one_or_none()
    return None if row is None else dict(row._mapping)


def count_rows(brama: Brama) -> tuple[int, int]:
    """How many rows ``brama_connections`` and ``brama_events`` hold."""
    with brama.engine.connect() as conn:
        return tuple(  # type: ignore[return-value]
            conn.execute(select(func.count()).select_from(table)).scalar_one()
            for table in (connections, events)
        )


def log_explains_row(
    brama: Brama,
    identifier: str,
    scope: str | None = None,
    settings: Settings | None = None,
) -> Circuit | None:
    """Replay the connection's log and assert it reproduces its row; return the replayed circuit.

    See :func:`brama_sql.replay.verify`; pass ``settings`` when the connection no longer exists.
    """
    try:
        return verify(brama.engine, identifier, scope, settings)
    except ReplayError as error:
        raise AssertionError(str(error)) from None


@contextmanager
def row_locked(db_url: URL, identifier: str = "svc") -> Iterator[Connection]:
    """Hold the row lock of ``identifier`` (unscoped) in another connection until the block
    ends; on SQLite, the database's write lock (``BEGIN IMMEDIATE``)."""
    engine = create_engine(db_url)
    conn = engine.connect()
    try:
        if engine.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.execute(
                select(connections.c.id)
                .where(connections.c.identifier == identifier, connections.c.scope == "")
                .with_for_update()
            )
        yield conn
    finally:
        conn.rollback()
        conn.close()
        engine.dispose()


@pytest.fixture
def admin(db_url: URL) -> Iterator[Connection]:
    """An autocommit connection to the test database that can end the others' sessions."""
    engine = create_engine(db_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        yield conn
    engine.dispose()


@pytest.fixture
def hold_row_lock(db_url: URL) -> Callable[..., AbstractContextManager[Connection]]:
    """``with hold_row_lock(identifier="svc"):`` another connection holds that row's lock."""
    return functools.partial(row_locked, db_url)


@pytest.fixture
def assert_log_explains_row() -> LogCheck:
    """``assert_log_explains_row(brama, identifier, scope=None, settings=None)``: see
    :func:`log_explains_row`."""
    return log_explains_row


@pytest.fixture
def row_counts() -> RowCounts:
    """``row_counts(brama) -> (connection rows, event rows)``."""
    return count_rows


@pytest.fixture
def connection_row() -> RowReader:
    """``connection_row(brama, identifier, scope) -> dict | None``: the raw row."""
    return read_row


@pytest.fixture
def async_url(db_url: URL, dialect: str) -> str:
    """The test's database with the dialect's asyncio driver (the one AsyncBrama picks)."""
    return db_url.set(drivername=ASYNC_DRIVERS[dialect]).render_as_string(hide_password=False)


@pytest_asyncio.fixture
async def abrama(async_url: str) -> AsyncIterator[AsyncBrama]:
    """An :class:`AsyncBrama` with default options on the test's database (disposed after)."""
    made = AsyncBrama(async_url)
    yield made
    await made.dispose()
