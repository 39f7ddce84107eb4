"""A django-health-check check: brama_sql's database answers and its schema is current.

With django-health-check 4 (checks listed on the view)::

    path(
        "ht/",
        HealthCheckView.as_view(checks=["brama_sql.contrib.django.health.BramaHealthCheck"]),
    )

Importing this module needs the ``django-health-check`` package
(``pip install brama_sql[django]`` brings Django only; add ``django-health-check``).
"""

from __future__ import annotations

import dataclasses

from health_check.base import HealthCheck
from health_check.exceptions import ServiceUnavailable


@dataclasses.dataclass
class BramaHealthCheck(HealthCheck):
    """Unavailable when brama_sql's database cannot be read or its schema is not current.

    Open circuits do not make it fail: a tripped dependency is what brama_sql is for, and
    the application keeps serving (see the status page for the circuits)."""

    def run(self) -> None:
        """Read the schema revision and the circuits once."""
        from brama_sql.contrib.django import schema
        from brama_sql.contrib.django.runtime import get_brama, read_config
        from brama_sql.errors import BramaError

        try:
            found = schema.problem(read_config().database)
            if found is None:
                get_brama().connections()
        except (BramaError, Exception) as error:
            raise ServiceUnavailable(f"brama_sql's database: {type(error).__name__}") from error
        if found is not None:
            raise ServiceUnavailable("brama_sql's schema is not current: run manage.py migrate")
