"""Settings of the example shop: brama_sql is one line of INSTALLED_APPS (and BRAMA_SQL, whose
every key is optional).

The database is SQLite in this folder unless SHOP_DATABASE names another:
``sqlite:////absolute/path.db``, ``postgresql://user:password@host:5432/name`` or
``mysql://user@host:3306/name``.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = os.environ.get("SHOP_SECRET_KEY", "example-only-not-secret")
DEBUG = os.environ.get("SHOP_DEBUG") == "1"
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "shop.urls"
WSGI_APPLICATION = "shop.wsgi.application"
USE_TZ = True
INSTALLED_APPS = [
    "brama_sql.contrib.django",  # brama_sql's tables come with `manage.py migrate`
    "catalog",
]
MIDDLEWARE: list[str] = []
INVENTORY_URL = os.environ.get("SHOP_INVENTORY_URL", "http://127.0.0.1:8001")
"""Where the (fake) inventory service answers."""


def _database(url: str | None) -> dict[str, object]:
    if not url or url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///") if url else BASE_DIR / "shop.sqlite3"
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": path}
    parts = urlsplit(url)
    engine = "postgresql" if parts.scheme.startswith("postgres") else "mysql"
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

        pymysql.install_as_MySQLdb()  # or `pip install mysqlclient`
        settings["OPTIONS"] = {"charset": "utf8mb4"}
    return settings


DATABASES = {"default": _database(os.environ.get("SHOP_DATABASE"))}

BRAMA_SQL = {
    "CONNECTIONS": {"inventory-api": {"failure_threshold": 3, "expiry": 30}},
}
