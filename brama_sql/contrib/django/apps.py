"""The Django application configuration of brama_sql."""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.core.signals import setting_changed
from django.db.models.signals import post_migrate


class BramaSQLConfig(AppConfig):
    """``brama_sql.contrib.django``: its label is ``brama_sql`` (``migrate brama_sql zero``).

    ``ready()`` touches no database: it registers the system check, the reaction to changed
    settings and the upgrade after ``migrate``.
    """

    name = "brama_sql.contrib.django"
    label = "brama_sql"
    verbose_name = "Circuit breakers (brama_sql)"
    default_auto_field = "django.db.models.AutoField"

    def ready(self) -> None:
        """Connect the signals and register the checks; no database access."""
        from brama_sql.contrib.django import checks, schema

        checks.register()
        setting_changed.connect(_settings_changed, dispatch_uid="brama_sql_settings")
        post_migrate.connect(
            schema.upgrade_after_migrate, sender=self, dispatch_uid="brama_sql_post_migrate"
        )


def _settings_changed(setting: str, **_kwargs: Any) -> None:
    if setting in ("BRAMA_SQL", "DATABASES"):
        from brama_sql.contrib.django.runtime import reset_brama

        reset_brama()
