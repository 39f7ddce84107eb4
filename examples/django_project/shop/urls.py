"""URLs of the example shop."""

from catalog import views
from django.urls import path

urlpatterns = [path("stock/<str:item>", views.stock)]
