"""The site's views: one protected by brama_sql."""

from django.http import HttpRequest, JsonResponse

from brama_sql.contrib.django import protect
from site_app import inventory
from site_app.models import Order


@protect("inventory-api")
def order(request: HttpRequest, item: str) -> JsonResponse:
    """Take an order after asking the inventory service for the stock."""
    Order.objects.create(item=item)
    return JsonResponse({"item": item, "stock": inventory.stock(item)})
