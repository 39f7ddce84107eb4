"""URLs of the test site."""

from django.contrib import admin
from django.urls import include, path

from brama_sql.contrib.django import views as brama_views
from site_app import views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("order/<str:item>/", views.order),
    path("brama/", include("brama_sql.contrib.django.urls")),
    path("metrics", brama_views.metrics),
]
