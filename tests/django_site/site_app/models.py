"""A model of the site's own, written in the same tests as the circuits."""

from django.db import models


class Order(models.Model):
    """An order the site takes while it asks the inventory service."""

    item = models.CharField(max_length=100)
