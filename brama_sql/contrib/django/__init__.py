"""brama_sql's Django app: add ``"brama_sql.contrib.django"`` to ``INSTALLED_APPS``.

Settings (all optional)::

    BRAMA_SQL = {
        "DATABASE": "default",            # the DATABASES alias holding brama_sql's tables
        "OPTIONS": {"failure_threshold": 5, "expiry": 30},   # Brama(...) keyword arguments
        "CONNECTIONS": {"inventory-api": {"failure_threshold": 3}},  # declared connections
    }

``manage.py migrate`` creates and upgrades the tables; code gets the instance from
:func:`get_brama` and protects calls with :func:`protect`. See docs/django.md.
"""

from __future__ import annotations

from brama_sql.contrib.django.protection import protect
from brama_sql.contrib.django.runtime import get_brama

__all__ = ["get_brama", "protect"]
