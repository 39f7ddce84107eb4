"""The shop's view: brama_sql protects its call to the inventory service."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse

from brama_sql.contrib.django import protect
from catalog import inventory


@protect("inventory-api", failure_if=lambda response: response.status_code >= 500)
def stock(request: HttpRequest, item: str) -> JsonResponse:
    """The stock of ``item``: 502 when the inventory service fails (a failure for the
    circuit), and 503 with Retry-After, without calling it, while the circuit is open."""
    try:
        count = inventory.stock(item)
    except inventory.InventoryError as error:
        return JsonResponse({"error": str(error)}, status=502)
    return JsonResponse({"item": item, "stock": count})
