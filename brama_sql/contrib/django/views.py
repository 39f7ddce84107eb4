"""Views: the status page and its JSON twin, and the Prometheus metrics.

The page and its JSON need a logged-in staff user unless
``BRAMA_SQL["STATUS_PAGE"]["LOGIN_REQUIRED"]`` is ``False`` (an anonymous visitor is sent to
the admin's login page, a logged-in non-staff user gets 403), and show no metadata values
unless ``BRAMA_SQL["STATUS_PAGE"]["SHOW_METADATA"]`` is ``True``. :func:`metrics` needs no
login: wire it in your own URLs where your Prometheus can reach it (and others cannot).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden, JsonResponse
from django.urls import NoReverseMatch, reverse

from brama_sql.contrib.django.runtime import get_brama, read_config

View = Callable[..., HttpResponse]


def _module(name: str) -> Any:
    """A module of brama_sql imported at the first request that needs it (the status page and
    the Prometheus collector come with their own optional dependencies)."""
    return importlib.import_module(name)


def _refusal(request: HttpRequest) -> HttpResponse | None:
    """``None`` when the request may see the page, else the response that refuses it."""
    if not read_config().page_login_required:
        return None
    user = getattr(request, "user", None)
    if user is not None and user.is_active and user.is_staff:
        return None
    if user is not None and user.is_authenticated:
        return HttpResponseForbidden("Staff only.")
    try:
        login = reverse("admin:login")
    except NoReverseMatch:
        login = None
    return redirect_to_login(request.get_full_path(), login)


def status_page(request: HttpRequest) -> HttpResponse:
    """The HTML status page: every connection's live state, metrics and 24-hour timeline."""
    refused = _refusal(request)
    if refused is not None:
        return refused
    try:
        json_url: str | None = reverse("brama_sql:status-json")
    except NoReverseMatch:
        json_url = None
    html = _module("brama_sql.status_page").status_page_html(
        get_brama(), show_metadata=read_config().page_show_metadata, json_url=json_url
    )
    return HttpResponse(html, content_type="text/html; charset=utf-8")


def status_json(request: HttpRequest) -> HttpResponse:
    """The status page's data as JSON."""
    refused = _refusal(request)
    if refused is not None:
        return refused
    data: dict[str, Any] = _module("brama_sql.status_page").status_page_data(
        get_brama(), show_metadata=read_config().page_show_metadata
    )
    return JsonResponse(data)


def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus's text exposition of every circuit (``prometheus_client`` must be
    installed: ``pip install brama_sql[prometheus]``)."""
    exposition = _module("brama_sql.contrib.prometheus").metrics_exposition
    body, content_type = exposition(get_brama())
    return HttpResponse(body, content_type=content_type)
