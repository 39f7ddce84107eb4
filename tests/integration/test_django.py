"""The Django app on SQLite, PostgreSQL and MariaDB: ``manage.py migrate`` creates and
upgrades brama_sql's tables and ``migrate brama_sql zero`` removes them; the system check;
``manage.py brama``; and the site's own tests under Django's test runner
(tests/django_site/site_app/tests.py), which must not write into the development database
nor leave the test database behind."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import URL

from brama_sql import Brama, State, migration

pytest.importorskip("django")

SITE = Path(__file__).resolve().parents[1] / "django_site"
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "django_project"
BRAMA_TABLES = {"brama_connections", "brama_events", "brama_permits", "brama_rollups"}


def manage(
    url: URL, *arguments: str, check: bool = True, minimal: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run ``manage.py`` of the test site on the database ``url``; ``minimal``: with brama_sql
    as the only installed app (fewer migrations to run)."""
    environment = {
        **os.environ,
        "BRAMA_SQL_TEST_DJANGO_URL": url.render_as_string(hide_password=False),
        "BRAMA_SQL_TEST_DJANGO_APPS": "minimal" if minimal else "all",
        "PYTHONPATH": str(SITE),
    }
    done = subprocess.run(
        [sys.executable, "manage.py", *arguments],
        cwd=SITE,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if check:
        assert done.returncode == 0, done.stdout + done.stderr
    return done


def tables(url: URL) -> set[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return set(inspect(conn).get_table_names())
    finally:
        engine.dispose()


def revision(url: URL) -> str | None:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return migration.current(conn)
    finally:
        engine.dispose()


def test_migrate_upgrade_check_commands_tests_and_zero(dialect: str, blank_url: URL) -> None:
    manage(blank_url, "migrate", "--noinput")
    assert BRAMA_TABLES | {migration.VERSION_TABLE, "django_migrations"} <= tables(blank_url)
    assert revision(blank_url) == migration.head()

    # A newer release's Alembic revision reaches the project through its next `migrate`.
    scripts = ScriptDirectory.from_config(migration.config())
    previous = scripts.get_revision(migration.head()).down_revision
    assert isinstance(previous, str)
    engine = create_engine(blank_url)
    migration.downgrade(engine, previous)
    engine.dispose()
    migrated = manage(blank_url, "migrate", "--noinput")  # its database checks run first
    assert "brama_sql.W001" in migrated.stdout + migrated.stderr, migrated.stderr
    assert revision(blank_url) == migration.head()

    status = manage(blank_url, "brama", "status")
    assert "No connections registered." in status.stdout

    tests = manage(blank_url, "test", "site_app", "--noinput", check=False, minimal=False)
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "OK" in tests.stderr and "skipped" not in tests.stderr, tests.stderr
    engine = create_engine(blank_url)
    with engine.connect() as conn:  # nothing written into the development database
        assert conn.execute(text("SELECT COUNT(*) FROM brama_connections")).scalar() == 0
        assert conn.execute(text("SELECT COUNT(*) FROM brama_events")).scalar() == 0
    engine.dispose()
    if dialect != "sqlite":
        assert f"test_{blank_url.database}" not in _databases(blank_url)

    # Outside tests: brama_sql's own engine, built from DATABASES, commits on its own.
    wrote = manage(
        blank_url,
        "shell",
        "-c",
        "from brama_sql.contrib.django import get_brama; b = get_brama(); "
        "b.failure('inventory-api', reason='own engine'); print(type(b.engine.pool).__name__)",
    )
    assert wrote.stdout.split()[-1] == "QueuePool", wrote.stdout  # not Django's connection
    assert "inventory-api" in manage(blank_url, "brama", "status").stdout
    assert "0 not explained" in manage(blank_url, "brama", "verify").stdout

    manage(blank_url, "migrate", "brama_sql", "zero", "--noinput")
    left = tables(blank_url)
    assert not (BRAMA_TABLES | {migration.VERSION_TABLE}) & left
    assert "django_migrations" in left


def _databases(url: URL) -> set[str]:
    engine = create_engine(url)
    query = (
        "SELECT datname FROM pg_database"
        if url.get_backend_name() == "postgresql"
        else "SHOW DATABASES"
    )
    try:
        with engine.connect() as conn:
            return {row[0] for row in conn.execute(text(query))}
    finally:
        engine.dispose()


def test_example_project_fails_then_heals(dialect: str, blank_url: URL) -> None:
    """examples/django_project's own test: a real HTTP dependency failing then healing."""
    shown = blank_url.render_as_string(hide_password=False)
    database = "" if dialect == "sqlite" else shown.replace("+psycopg", "").replace("+pymysql", "")
    done = subprocess.run(
        [sys.executable, "manage.py", "test", "--noinput"],
        cwd=EXAMPLE,
        env={**os.environ, "SHOP_DATABASE": database},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Ran 1 test" in done.stderr and "OK" in done.stderr


class _Inventory(BaseHTTPRequestHandler):
    """A fake inventory service that always fails (500) and counts its calls."""

    calls = 0

    def do_GET(self) -> None:
        type(self).calls += 1
        self.send_response(500)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _status(port: int, path: str) -> int:
    try:
        with DIRECT.open(f"http://127.0.0.1:{port}{path}", timeout=10) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


@pytest.mark.slow
def test_example_project_under_gunicorn_trips_once_for_every_worker(tmp_path: Path) -> None:
    """The production path: the Brama of each forked worker (gunicorn --preload, 2 workers)
    on brama_sql's own engine, built from DATABASES; a failing dependency trips the circuit
    once (its three failures may come from either worker), and then whichever worker answers
    refuses with 503 without calling it: the state is in SQL, not in a worker's memory."""
    database = f"sqlite:///{tmp_path / 'shop.sqlite3'}"
    inventory = ThreadingHTTPServer(("127.0.0.1", 0), _Inventory)
    threading.Thread(target=inventory.serve_forever, daemon=True).start()
    environment = {
        **os.environ,
        "SHOP_DATABASE": database,
        "SHOP_INVENTORY_URL": f"http://127.0.0.1:{inventory.server_address[1]}",
    }
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput"],
        cwd=EXAMPLE,
        env=environment,
        check=True,
        capture_output=True,
        timeout=60,
    )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = tmp_path / "gunicorn.log"
    with log.open("wb") as output:
        server = subprocess.Popen(
            [
                *(sys.executable, "-m", "gunicorn", "--preload", "-w", "2"),
                *("-b", f"127.0.0.1:{port}", "--graceful-timeout", "5", "shop.wsgi"),
            ],
            cwd=EXAMPLE,
            env=environment,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 30
        while log.read_text().count("Booting worker") < 2 or not _answers(port):
            assert server.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        codes = [_status(port, "/stock/pen") for _ in range(12)]
        assert codes == [502] * 3 + [503] * 9, codes
        assert _Inventory.calls == 3
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(10)
        inventory.shutdown()
        inventory.server_close()
    workers = {
        line.split("pid: ")[-1] for line in log.read_text().splitlines() if "Booting" in line
    }
    assert len(workers) == 2
    brama = Brama(database)
    try:
        opened = [e for e in brama.events("inventory-api") if e.to_state == State.OPEN]
        assert len(opened) == 1
    finally:
        brama.dispose()


def _answers(port: int) -> bool:
    """Whether the server answers (a 404 for a path that is no view, before any call)."""
    try:
        return _status(port, "/ready") == 404
    except OSError:
        return False


def test_startup_and_checks_touch_no_database() -> None:
    """``AppConfig.ready()`` and the default checks run with a database that does not answer
    (port 1): brama_sql reads its settings and connects on first use only."""
    unreachable = URL.create("postgresql", username="nobody", host="127.0.0.1", port=1)
    done = manage(unreachable.set(database="none"), "check", minimal=False)
    assert "System check identified no issues" in done.stdout
