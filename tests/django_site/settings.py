"""Django settings of the test site, on the database named by BRAMA_SQL_TEST_DJANGO_URL.

``sqlite`` (the default) is an SQLite file whose test database is in memory; a
``postgresql://`` or ``mysql://`` URL names a server database (the test runner creates
``test_<name>`` beside it and drops it after).
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

HERE = Path(__file__).resolve().parent
SECRET_KEY = "brama-sql-tests"
DEBUG = False
USE_TZ = True
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "site_app.urls"
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "brama_sql.contrib.django",
    "site_app",
]
if os.environ.get("BRAMA_SQL_TEST_DJANGO_APPS") == "minimal":
    # brama_sql alone: the migrate / zero / upgrade steps of tests/integration/test_django.py
    INSTALLED_APPS = ["brama_sql.contrib.django"]
    ROOT_URLCONF = "site_app.no_urls"
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]


def _database(url: str) -> dict[str, object]:
    if url == "sqlite" or url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///") if url != "sqlite" else str(HERE / "dev.sqlite3")
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": path}
    parts = urlsplit(url.replace("+psycopg", "").replace("+pymysql", ""))
    engine = "postgresql" if parts.scheme.startswith("postgresql") else "mysql"
    settings: dict[str, object] = {
        "ENGINE": f"django.db.backends.{engine}",
        "NAME": parts.path.lstrip("/"),
        "USER": parts.username or "",
        "PASSWORD": parts.password or "",
        "HOST": parts.hostname or "",
        "PORT": str(parts.port or ""),
    }
    if engine == "mysql":
        import pymysql

        pymysql.install_as_MySQLdb()  # Django's MySQL backend through PyMySQL
        settings["OPTIONS"] = {"charset": "utf8mb4"}
    return settings


DATABASES = {"default": _database(os.environ.get("BRAMA_SQL_TEST_DJANGO_URL", "sqlite"))}
BRAMA_SQL = {
    "OPTIONS": {"failure_threshold": 2, "expiry": 30},
    "CONNECTIONS": {"inventory-api": {"failure_threshold": 3}},
}
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast test users
