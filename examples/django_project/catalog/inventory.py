"""The client of the inventory service, a dependency that may fail."""

from __future__ import annotations

import json
import urllib.request

from django.conf import settings


class InventoryError(Exception):
    """The inventory service failed or did not answer."""


def stock(item: str) -> int:
    """How many of ``item`` the inventory service has, asked over HTTP within 2 seconds."""
    try:
        with urllib.request.urlopen(f"{settings.INVENTORY_URL}/stock/{item}", timeout=2) as answer:
            return int(json.load(answer)["count"])
    except (OSError, ValueError, KeyError) as error:  # refused, timed out, 5xx, bad body
        raise InventoryError(f"inventory: {error}") from error
