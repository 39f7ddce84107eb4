"""The read pool (``brama_sql/read_pool.py``) on each driver it knows (psycopg, PyMySQL,
sqlite3): reads reuse a few autocommit connections of their own, made with the engine's session
settings and listeners, at most the engine pool's size of them, and never at the expense of the
engine's pool; a connection the server ended is replaced without an error, and ``dispose()``
closes them.

Other engines have none: a host's engine, an in-memory SQLite database and the asyncio engines
read through SQLAlchemy's pool (checked here too)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.pool import QueuePool

from brama_sql import AsyncBrama, Brama, watchdog
from brama_sql.errors import NotRegisteredError
from brama_sql.prepared import Raw
from brama_sql.read_pool import ReadConnection, ReadPool

READERS = 12
"""Threads reading at once: more than the read pool holds."""


def _read_pool(brama: Brama) -> ReadPool:
    reads = brama._transactions._read_pool
    assert reads is not None
    return reads


def _in_autocommit(dbapi_connection: Any) -> bool:
    """Whether a driver connection runs each statement in a transaction of its own."""
    if hasattr(dbapi_connection, "pgconn"):  # psycopg
        return dbapi_connection.autocommit is True
    if hasattr(dbapi_connection, "get_autocommit"):  # PyMySQL
        return dbapi_connection.get_autocommit() is True
    return dbapi_connection.isolation_level is None  # sqlite3: begins no transaction itself


def _closed(dbapi_connection: Any) -> bool:
    """Whether a driver connection was closed."""
    if hasattr(dbapi_connection, "pgconn"):
        return bool(dbapi_connection.closed)
    if hasattr(dbapi_connection, "get_autocommit"):
        return not dbapi_connection.open
    try:
        dbapi_connection.in_transaction  # noqa: B018  sqlite3 refuses it once closed
    except Exception:
        return True
    return False


def _end_session(admin: Connection, dbapi_connection: Any) -> None:
    """End a server session from the server's side, as an administrator or a restart would."""
    if admin.dialect.name == "postgresql":
        pid = dbapi_connection.info.backend_pid
        admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    else:
        admin.exec_driver_sql(f"KILL {int(dbapi_connection.thread_id())}")


def _opened(engine: Engine) -> list[Any]:
    """The DBAPI connections ``engine`` opens from now on (its pool's and its read pool's)."""
    opened: list[Any] = []
    event.listen(
        engine, "connect", lambda dbapi_connection, _record: opened.append(dbapi_connection)
    )
    return opened


def test_reads_reuse_one_autocommit_connection_and_leave_the_engines_pool_alone(
    brama: Brama,
) -> None:
    brama.register("svc")
    pool = brama.engine.pool
    assert isinstance(pool, QueuePool)
    assert brama.available("svc") is True  # the read pool takes its first connection
    (connection,) = _read_pool(brama)._idle
    assert _in_autocommit(connection.dbapi_connection)
    pooled = pool.checkedin()
    opened = _opened(brama.engine)
    checkouts: list[Any] = []
    event.listen(brama.engine, "checkout", lambda *_: checkouts.append(None))
    for _ in range(50):
        assert brama.available("svc") is True
        assert brama.status("svc").state == "unknown"
    assert opened == [] and checkouts == [], "every read found the read connection idle"
    assert _read_pool(brama)._idle == [connection]
    assert pool.checkedout() == 0 and pool.checkedin() == pooled
    with brama.engine.connect() as conn:  # detached: the engine's pool never hands it out
        assert conn.connection.dbapi_connection is not connection.dbapi_connection


SESSION_SETTINGS = {
    "postgresql": (
        [f"SHOW {name}" for name in ("TimeZone", "jit", "lock_timeout")]
        + ["SHOW idle_in_transaction_session_timeout"],
        ["UTC", "off", "3s", "1500ms"],
    ),
    "mysql": (
        [
            "SELECT @@session.innodb_lock_wait_timeout",
            "SELECT @@session.idle_transaction_timeout",
            "SELECT @@session.tx_isolation",
        ],
        [3, 2, "READ-COMMITTED"],
    ),
    "sqlite": (["PRAGMA busy_timeout", "PRAGMA journal_mode"], [3000, "wal"]),
}
"""What an engine brama_sql builds sets on each connection it opens, with a 3 s lock wait."""


def test_read_connections_have_the_engines_session_settings_and_listeners(
    make_brama: Callable[..., Brama], dialect: str
) -> None:
    brama = make_brama(lock_timeout=3)
    tagged = _opened(brama.engine)
    brama.register("svc")
    assert brama.available("svc") is True
    (connection,) = _read_pool(brama)._idle
    assert connection.dbapi_connection in tagged  # opened by the engine's pool, its events run
    cursor = connection.dbapi_connection.cursor()
    queries, expected = SESSION_SETTINGS[dialect]
    found = []
    for query in queries:
        cursor.execute(query)
        found.append(cursor.fetchone()[0])
    cursor.close()
    assert found == expected


def test_readers_beyond_its_capacity_take_pooled_connections(brama: Brama) -> None:
    brama.register("svc")
    reads = _read_pool(brama)
    pool = brama.engine.pool
    assert isinstance(pool, QueuePool)
    assert reads.capacity == pool.size() == 5
    inside = threading.Barrier(READERS, timeout=30)
    on_read_pool: list[bool] = []
    original = brama._transactions._read_pooled

    def read_pooled(body: Callable[[Raw], Any], watch: Any) -> Any:
        on_read_pool.append(False)
        return original(body, watch)

    brama._transactions._read_pooled = read_pooled  # type: ignore[method-assign]

    def read(_index: int) -> bool:
        inside.wait()
        return all(brama.available("svc") for _ in range(30))

    with ThreadPoolExecutor(READERS) as executor:
        assert all(executor.map(read, range(READERS)))
    assert reads._count <= reads.capacity
    assert len(reads._idle) == reads._count >= 1
    assert pool.checkedout() == 0
    # Twelve threads reading at once for a while: some found all five in use.
    assert on_read_pool, "no reader ever fell back to the engine's pool"


SERVERS = pytest.mark.parametrize("dialect", ["postgresql", "mysql"], indirect=True)
"""For what only a server does: end a session from its side."""


@SERVERS
def test_a_read_connection_the_server_ended_is_replaced_without_an_error(
    brama: Brama, admin: Connection
) -> None:
    brama.register("svc")
    brama.available("svc")
    reads = _read_pool(brama)
    (connection,) = reads._idle
    _end_session(admin, connection.dbapi_connection)
    opened = _opened(brama.engine)
    assert brama.available("svc") is True  # tried again on a new connection
    assert connection.invalidated and _closed(connection.dbapi_connection)
    assert len(opened) == 1
    (replacement,) = reads._idle
    assert replacement.dbapi_connection is opened[0]
    assert reads._count == 1


@SERVERS
def test_a_lost_read_connection_closes_the_idle_ones(brama: Brama, admin: Connection) -> None:
    brama.register("svc")
    reads = _read_pool(brama)
    held = [reads.take() for _ in range(3)]
    for connection in held:
        assert connection is not None
        reads.give_back(connection)
    top = reads._idle[-1]
    _end_session(admin, top.dbapi_connection)
    assert brama.available("svc") is True
    assert all(connection.invalidated for connection in held)
    assert len(reads._idle) == 1 and reads._count == 1
    assert reads._idle[0] not in held


def test_a_failed_read_never_goes_back_and_dispose_closes_the_idle_ones(brama: Brama) -> None:
    brama.register("svc")
    reads = _read_pool(brama)
    brama.available("svc")
    (first,) = reads._idle

    def failing(_conn: Raw) -> None:
        raise RuntimeError("the read's own failure")

    with pytest.raises(RuntimeError, match="own failure"):
        brama._transactions.read("test", failing)
    assert first.invalidated and reads._idle == [] and reads._count == 0
    brama.available("svc")
    (second,) = reads._idle
    brama.dispose()
    assert second.invalidated and _closed(second.dbapi_connection)
    assert reads._idle == [] and reads._count == 0
    assert brama.available("svc") is True  # usable after dispose(), as the engine is
    assert len(reads._idle) == 1


def test_a_connection_in_use_while_the_pool_let_go_is_closed_when_its_read_ends(
    brama: Brama,
) -> None:
    brama.register("svc")
    reads = _read_pool(brama)
    taken = reads.take()
    assert isinstance(taken, ReadConnection)
    reads.close()
    reads.give_back(taken)
    assert taken.invalidated and reads._idle == [] and reads._count == 0


def test_a_connection_from_before_a_close_found_on_the_stack_is_closed_not_handed_out(
    brama: Brama,
) -> None:
    # A thread that popped the old stack just as close() swapped it can leave an old
    # connection where take() finds it: its generation tells, and it is closed.
    brama.register("svc")
    reads = _read_pool(brama)
    old = reads.take()
    assert isinstance(old, ReadConnection)
    reads.close()
    reads._idle.append(old)
    fresh = reads.take()
    assert isinstance(fresh, ReadConnection) and fresh is not old
    assert old.invalidated and _closed(old.dbapi_connection)
    assert reads._idle == [] and reads._count == 1
    reads.give_back(fresh)
    assert brama.available("svc") is True and reads._idle == [fresh]


def test_other_engines_read_through_sqlalchemys_pool(
    make_brama: Callable[..., Brama], db_url: URL, dialect: str
) -> None:
    assert make_brama()._transactions._read_pool is not None
    if dialect == "sqlite":  # one connection shared by every thread: nothing to set aside
        memory = Brama("sqlite://")
        try:
            assert memory._transactions._read_pool is None
        finally:
            memory.dispose()
    host = create_engine(db_url)
    hosted = Brama(host)
    try:
        assert hosted._transactions._read_pool is None
        assert hosted.connections() == []
    finally:
        hosted.dispose()
        host.dispose()


@pytest.mark.asyncio
@pytest.mark.parametrize("dialect", ["postgresql"], indirect=True)
async def test_asyncio_engines_read_through_sqlalchemys_pool(db_url: URL) -> None:
    brama = AsyncBrama(db_url)
    try:
        assert brama.sync._transactions._read_pool is None
        assert await brama.connections() == []
    finally:
        await brama.dispose()


def test_a_read_that_raises_not_registered_keeps_its_connection(brama: Brama) -> None:
    # status() of a name that has no row raises NotRegisteredError from the read's body, after
    # its statement ran: the connection is idle and sound, and must not be closed and opened
    # anew on every such call (a status page or health check asking for a missing name).
    brama.register("svc")
    assert brama.available("svc") is True
    reads = _read_pool(brama)
    (connection,) = reads._idle
    opened = _opened(brama.engine)
    for _ in range(10):
        with pytest.raises(NotRegisteredError):
            brama.status("ghost")
    assert opened == [], f"{len(opened)} connections opened for 10 reads of a missing name"
    assert reads._idle == [connection] and not connection.invalidated
    assert reads._count == 1


def test_a_failed_connect_while_the_pool_let_go_keeps_the_capacity(brama: Brama) -> None:
    # take() counts a connection before it connects; if the pool lets go of its connections
    # meanwhile (dispose(), or a lost read in another thread: close() resets the count) and
    # the connect then fails, the count must not be taken below what close() reset it to.
    brama.register("svc")
    brama.engine.dispose()  # the pool holds no connection: the take() below opens one
    reads = _read_pool(brama)
    refusal = brama.engine.dialect.loaded_dbapi.OperationalError

    def refused(_dbapi_connection: Any, _record: Any) -> None:
        reads.close()  # another thread's dispose() while this connect was under way
        raise refusal("connection refused")

    event.listen(brama.engine, "connect", refused)
    with pytest.raises(refusal):
        reads.take()
    event.remove(brama.engine, "connect", refused)
    assert reads._count == 0
    held = [reads.take() for _ in range(reads.capacity + 1)]
    try:
        assert held[-1] is None, "more read connections than the documented capacity"
    finally:
        for connection in held:
            if connection is not None:
                reads.discard(connection)


def test_an_interrupt_right_after_the_take_neither_leaks_the_connection_nor_its_count(
    brama: Brama, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A KeyboardInterrupt (a signal handler's exception) can arrive at any bytecode: here while
    # the taken connection is attached to the call's watch, before the read's try block.
    brama.register("svc")
    assert brama.available("svc") is True
    reads = _read_pool(brama)
    (connection,) = reads._idle

    def interrupted(_watch: Any, _dbapi_connection: Any) -> None:
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(watchdog.Watch, "attach", interrupted)
        with pytest.raises(KeyboardInterrupt):
            brama.available("svc")
    assert connection.invalidated, "the interrupted read's connection was left open"
    assert reads._count == 0, "its count was never given back: the capacity shrank for good"


def test_a_read_connection_goes_back_only_once_its_call_is_disarmed(
    brama: Brama, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The watchdog cuts the connection of an armed call whose deadline passes: a connection
    # pushed back while its call is still armed could be cut in another thread's read (on
    # SQLite, an interrupt() of that read's statement).
    brama.register("svc")
    assert brama.available("svc") is True
    armed_at_give_back: list[int] = []
    give_back = ReadPool.give_back

    def spied(reads: ReadPool, connection: ReadConnection) -> None:
        armed_at_give_back.append(len(watchdog._armed))
        give_back(reads, connection)

    monkeypatch.setattr(ReadPool, "give_back", spied)
    assert brama.available("svc") is True
    with pytest.raises(NotRegisteredError):
        brama.status("ghost")
    assert armed_at_give_back == [0, 0]
