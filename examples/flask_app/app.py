"""A Flask shop whose stock page calls an inventory service through a circuit breaker.

    BRAMA_SQL_DATABASE_URI=sqlite:////tmp/shop.db INVENTORY_URL=http://127.0.0.1:8001 \
        gunicorn -w 4 --preload 'app:create_app()'

The glue is the extension and a decorator: ``BramaSQL()`` / ``init_app``, and
``@brama_sql.protect(...)`` on the view. A failing inventory answers 503 without ``Retry-After``
(the error handler below); once the circuit is open, calls are refused without touching the
inventory and Flask answers 503 with ``Retry-After`` (the extension's handler).
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from typing import Any

from flask import Flask, Response

from brama_sql.contrib.flask import BramaSQL

brama_sql = BramaSQL(failure_threshold=5, expiry=30)


class InventoryError(Exception):
    """The inventory service failed or did not answer."""


def fetch_stock(base_url: str, sku: str) -> int:
    """Ask the inventory service for a SKU's stock."""
    try:
        with urllib.request.urlopen(f"{base_url}/stock/{sku}", timeout=2) as answer:
            return int(json.load(answer)["stock"])
    except (urllib.error.URLError, OSError, ValueError, KeyError) as error:
        raise InventoryError(str(error)) from error


def _parsed(value: str) -> Any:
    """An environment value as JSON when it is JSON (numbers, ``null``), else the text."""
    try:
        return json.loads(value)
    except ValueError:
        return value


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """The app; config from the environment (``BRAMA_SQL_*``, ``INVENTORY_URL``), then
    ``config``."""
    app = Flask(__name__)
    for key, value in os.environ.items():
        if key.startswith("BRAMA_SQL_"):
            app.config[key] = _parsed(value)  # BRAMA_SQL_EXPIRY=2 -> 2
    app.config["INVENTORY_URL"] = os.environ.get("INVENTORY_URL", "http://127.0.0.1:8001")
    app.config.update(config or {})
    brama_sql.init_app(app)

    @app.get("/stock/<sku>")
    @brama_sql.protect("inventory-api", register=True)
    def stock(sku: str) -> dict[str, Any]:
        return {"sku": sku, "stock": fetch_stock(app.config["INVENTORY_URL"], sku)}

    @app.errorhandler(InventoryError)
    def inventory_failed(error: InventoryError) -> tuple[dict[str, str], int]:
        return {"error": "the inventory service is failing"}, 503

    @app.after_request
    def tag_worker(response: Response) -> Response:
        response.headers["X-Worker-Pid"] = str(os.getpid())  # the test checks every worker
        return response

    with app.app_context():
        brama_sql.brama.migrate()  # idempotent; safe from several workers at once
    return app
