"""The database matrix: every test that takes ``db_url`` or ``brama`` runs on SQLite, PostgreSQL and
MariaDB/MySQL. Each test run creates its own server databases and drops them at the end.

Server tests skip with the reason when a server does not answer, and fail instead when
``BRAMA_SQL_REQUIRE_SERVERS=1``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import OperationalError

from brama_sql import Brama
from brama_sql.migration import upgrade
from brama_sql.schema import metadata

SERVER_URLS = {
    "postgresql": os.environ.get(
        "BRAMA_SQL_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    ),
    "mysql": os.environ.get("BRAMA_SQL_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test"),
}
DIALECTS = ["sqlite", "postgresql", "mysql"]
REQUIRE_SERVERS = os.environ.get("BRAMA_SQL_REQUIRE_SERVERS") == "1"


def _unavailable(dialect: str, error: Exception) -> None:
    message = f"{dialect} server at {make_url(SERVER_URLS[dialect])!r} does not answer: {error}"
    if REQUIRE_SERVERS:
        pytest.fail(f"{message} (BRAMA_SQL_REQUIRE_SERVERS=1)", pytrace=False)
    pytest.skip(message)


class ServerDatabases:
    """Creates and drops throw-away databases on one server."""

    def __init__(self, dialect: str) -> None:
        self.dialect = dialect
        self.admin_url = make_url(SERVER_URLS[dialect])
        self.admin = create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        self.created: list[str] = []

    def create(self, charset: str = "utf8mb4") -> URL:
        """A new database; on MariaDB/MySQL with the default character set ``charset``."""
        name = f"brama_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        with self.admin.connect() as conn:
            if self.dialect == "mysql":
                conn.execute(text(f"CREATE DATABASE {name} CHARACTER SET {charset}"))
            else:
                conn.execute(text(f"CREATE DATABASE {name}"))
        self.created.append(name)
        return self.admin_url.set(database=name)

    def drop(self, url: URL) -> None:
        name = url.database
        assert name is not None
        with self.admin.connect() as conn:
            if self.dialect == "postgresql":
                conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            else:
                conn.execute(text(f"DROP DATABASE IF EXISTS {name}"))
        self.created.remove(name)

    def close(self) -> None:
        for name in list(self.created):
            self.drop(self.admin_url.set(database=name))
        self.admin.dispose()


@pytest.fixture(scope="session")
def servers() -> Iterator[dict[str, ServerDatabases]]:
    """One :class:`ServerDatabases` per server dialect, made when first asked for."""
    made: dict[str, ServerDatabases] = {}
    yield made
    for server in made.values():
        server.close()


def _server(servers: dict[str, ServerDatabases], dialect: str) -> ServerDatabases:
    if dialect not in servers:
        server = ServerDatabases(dialect)
        try:
            with server.admin.connect():
                pass
        except OperationalError as error:
            _unavailable(dialect, error)
        servers[dialect] = server
    return servers[dialect]


@pytest.fixture(scope="session")
def migrated_servers(servers: dict[str, ServerDatabases]) -> dict[str, URL]:
    """A migrated database per server dialect, shared by the tests of this run."""
    return {}


@pytest.fixture(params=DIALECTS)
def dialect(request: pytest.FixtureRequest) -> str:
    """The dialect under test: ``sqlite``, ``postgresql`` or ``mysql``."""
    name: str = request.param
    if name != "sqlite":
        request.applymarker(pytest.mark.server)
    return name


@pytest.fixture
def db_url(
    dialect: str,
    tmp_path: Any,
    servers: dict[str, ServerDatabases],
    migrated_servers: dict[str, URL],
) -> Iterator[URL]:
    """A migrated database with empty brama_sql tables, on the dialect under test."""
    if dialect == "sqlite":
        url = make_url(f"sqlite:///{tmp_path / 'brama.db'}")
        engine = create_engine(url)
        upgrade(engine)
        engine.dispose()
        yield url
        return
    if dialect not in migrated_servers:
        url = _server(servers, dialect).create()
        engine = create_engine(url)
        upgrade(engine)
        engine.dispose()
        migrated_servers[dialect] = url
    url = migrated_servers[dialect]
    engine = create_engine(url)
    with engine.begin() as conn:
        for table in metadata.sorted_tables:
            conn.execute(table.delete())
    engine.dispose()
    yield url


@pytest.fixture
def blank_url(dialect: str, tmp_path: Any, servers: dict[str, ServerDatabases]) -> Iterator[URL]:
    """A new, empty database (never migrated), dropped after the test."""
    if dialect == "sqlite":
        yield make_url(f"sqlite:///{tmp_path / 'blank.db'}")
        return
    server = _server(servers, dialect)
    url = server.create()
    yield url
    server.drop(url)


@pytest.fixture
def latin1_url(dialect: str, blank_url: URL, servers: dict[str, ServerDatabases]) -> Iterator[URL]:
    """A new, empty database; on MariaDB/MySQL one whose default character set is ``latin1``
    (the server default before MariaDB 11.6), dropped after the test."""
    if dialect != "mysql":
        yield blank_url
        return
    server = _server(servers, dialect)
    url = server.create(charset="latin1")
    yield url
    server.drop(url)


@pytest.fixture
def make_brama(db_url: URL) -> Iterator[Callable[..., Brama]]:
    """A factory of :class:`Brama` objects on the test's database (disposed afterwards)."""
    made: list[Brama] = []

    def make(**options: Any) -> Brama:
        brama = Brama(db_url.render_as_string(hide_password=False), **options)
        made.append(brama)
        return brama

    yield make
    for brama in made:
        brama.dispose()


@pytest.fixture
def brama(make_brama: Callable[..., Brama]) -> Brama:
    """A :class:`Brama` with default options on the test's database."""
    return make_brama()
