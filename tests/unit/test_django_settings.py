"""The ``BRAMA_SQL`` setting checked, and ``DATABASES`` entries turned into brama_sql's URLs
(no database: Django's connection objects are made, never connected)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("django")

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

DATABASES = {
    "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": "/srv/site/db.sqlite3"},
    "pg": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "shop",
        "USER": "app",
        "PASSWORD": "p@ss word",
        "HOST": "db.internal",
        "PORT": "6432",
        "OPTIONS": {"sslmode": "require", "server_side_binding": True},
    },
    "maria": {
        "ENGINE": "django.db.backends.mysql",
        "NAME": "shop",
        "USER": "root",
        "HOST": "127.0.0.1",
        "PORT": 3306,
    },
}


@pytest.fixture(autouse=True, scope="module")
def django_settings() -> Iterator[None]:
    import pymysql

    pymysql.install_as_MySQLdb()
    if not settings.configured:
        settings.configure(DATABASES=DATABASES, USE_TZ=True)
    if settings.DATABASES != DATABASES:
        pytest.skip("Django's settings were configured by another test module")
    yield


def config(**given: Any) -> Any:
    from brama_sql.contrib.django.runtime import read_config

    with override_settings(BRAMA_SQL=given):
        return read_config()


def test_defaults_and_given_values() -> None:
    found = config(
        DATABASE="pg",
        OPTIONS={"failure_threshold": 3},
        CONNECTIONS={"payments-api": {"expiry": 10}},
        STATUS_PAGE={"SHOW_METADATA": True},
    )
    assert found.database == "pg"
    assert found.options == {"failure_threshold": 3}
    assert found.connections == {"payments-api": {"expiry": 10}}
    assert found.share_connection is None
    assert found.page_login_required is True and found.page_show_metadata is True
    assert config().database == "default"


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"DATABSE": "pg"}, "unknown keys DATABSE"),
        ({"DATABASE": "replica"}, "'replica', which is not in DATABASES"),
        ({"OPTIONS": [("expiry", 3)]}, "['OPTIONS'] must be a dict"),
        ({"OPTIONS": {"connections": {}}}, "use BRAMA_SQL['CONNECTIONS']"),
        ({"SHARE_CONNECTION": "yes"}, "must be True, False or None"),
        ({"STATUS_PAGE": {"PUBLIC": True}}, "STATUS_PAGE"),
    ],
)
def test_bad_settings_are_named(given: dict[str, Any], message: str) -> None:
    with pytest.raises(ImproperlyConfigured, match=message.replace("[", r"\[").replace("(", r"\(")):
        config(**given)


def test_urls_from_databases() -> None:
    from django.db import connections

    from brama_sql.contrib.django.database import database_url

    sqlite = database_url(connections["default"])
    assert sqlite.render_as_string() == "sqlite:////srv/site/db.sqlite3"
    pg = database_url(connections["pg"])
    assert pg.drivername == "postgresql+psycopg"
    assert (pg.username, pg.password, pg.host, pg.port, pg.database) == (
        "app",
        "p@ss word",
        "db.internal",
        6432,
        "shop",
    )
    assert dict(pg.query) == {"sslmode": "require"}  # Django's own options stay Django's
    maria = database_url(connections["maria"])
    assert maria.drivername == "mysql+pymysql"
    assert maria.password is None and maria.port == 3306
    assert dict(maria.query) == {"charset": "utf8mb4"}


def test_protect_refuses_coroutine_and_generator_views_when_decorated() -> None:
    from brama_sql.contrib.django import protect
    from brama_sql.errors import ArgumentTypeError

    async def view(request: object) -> None: ...

    def stream(request: object) -> Iterator[str]:
        yield "x"

    for function in (view, stream):
        with pytest.raises(ArgumentTypeError, match="plain function"):
            protect("payments-api")(function)


@pytest.mark.parametrize(
    ("retry_after", "header"), [(29.2, "30"), (0.0, "1"), (0.4, "1"), (None, "1")]
)
def test_a_refusal_always_says_when_to_retry(retry_after: float | None, header: str) -> None:
    from brama_sql.contrib.django.protection import refused_response
    from brama_sql.errors import CircuitOpenError

    response = refused_response(CircuitOpenError("payments-api", None, None, retry_after))
    assert response.status_code == 503
    assert response["Retry-After"] == header
