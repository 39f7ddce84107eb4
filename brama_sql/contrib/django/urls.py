"""``path("brama/", include("brama_sql.contrib.django.urls"))``: the status page (``""``)
and its JSON twin (``"status.json"``), behind a staff login by default (see
:mod:`brama_sql.contrib.django.views`). The Prometheus view, ``views.metrics``, is not
included: wire it where your scraper can reach it."""

from __future__ import annotations

from django.urls import path

from brama_sql.contrib.django import views

app_name = "brama_sql"
urlpatterns = [
    path("", views.status_page, name="status"),
    path("status.json", views.status_json, name="status-json"),
]
