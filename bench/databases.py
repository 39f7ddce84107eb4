"""The database of each run: an SQLite file in a temporary directory, or a database created on
the PostgreSQL or MariaDB server and dropped at the end; and the servers' versions."""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url

SERVER_URLS = {
    "postgresql": os.environ.get(
        "BRAMA_SQL_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    ),
    "mysql": os.environ.get("BRAMA_SQL_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test"),
}
"""The servers, as the test suite finds them (the same environment variables override them).
The database named in the URL is only used to create and drop the run's own."""


class Unavailable(Exception):
    """A server that does not answer (the message says which and why)."""


@contextmanager
def database(dialect: str, server_url: str | None = None) -> Iterator[URL]:
    """A new, empty database for one run, removed when the block ends.

    Raises :class:`Unavailable` when the server does not answer.
    """
    if dialect == "sqlite":
        directory = tempfile.mkdtemp(prefix="brama-bench-")
        try:
            yield make_url(f"sqlite:///{os.path.join(directory, 'bench.db')}")
        finally:
            shutil.rmtree(directory, ignore_errors=True)
        return
    admin_url = make_url(server_url or SERVER_URLS[dialect])
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    name = f"brama_bench_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    try:
        try:
            with admin.connect() as conn:
                options = " CHARACTER SET utf8mb4" if dialect == "mysql" else ""
                conn.execute(text(f"CREATE DATABASE {name}{options}"))
        except Exception as error:
            shown = admin_url.render_as_string(hide_password=True)
            first = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
            raise Unavailable(f"{dialect} server at {shown} does not answer: {first}") from error
        try:
            yield admin_url.set(database=name)
        finally:
            with admin.connect() as conn:
                force = " WITH (FORCE)" if dialect == "postgresql" else ""
                conn.execute(text(f"DROP DATABASE IF EXISTS {name}{force}"))
    finally:
        admin.dispose()


def server_version(url: URL) -> str:
    """The server's version string (SQLite's library version for SQLite)."""
    if url.get_backend_name() == "sqlite":
        return sqlite3.sqlite_version
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            query = (
                "SHOW server_version" if engine.dialect.name == "postgresql" else "SELECT VERSION()"
            )
            return str(conn.exec_driver_sql(query).scalar_one())
    finally:
        engine.dispose()
