"""System checks: ``brama_sql.W001`` when brama_sql's schema is behind or missing.

A database check (``Tags.database``): Django runs it on ``manage.py check --database default``
and before ``manage.py migrate``, never on plain ``check`` or ``runserver``, which must not
touch the database.
"""

from __future__ import annotations

from typing import Any

from django.core import checks

SCHEMA_BEHIND = "brama_sql.W001"
UNREACHABLE = "brama_sql.W002"


def register() -> None:
    """Register the checks (from ``AppConfig.ready()``)."""
    checks.register(check_schema, checks.Tags.database)


def check_schema(
    app_configs: Any = None, databases: Any = None, **_kwargs: Any
) -> list[checks.CheckMessage]:
    """Warn when brama_sql's Django migration is applied in its database but its tables are
    missing or behind the installed release's newest revision."""
    from brama_sql.contrib.django import schema
    from brama_sql.contrib.django.runtime import read_config

    alias = read_config().database
    if not databases or alias not in databases:
        return []
    try:
        if not schema.initial_applied(alias):
            return []  # `migrate` has yet to create the tables, as Django's own
        found = schema.problem(alias)
    except Exception as error:  # Django's, SQLAlchemy's and the driver's errors alike
        return [
            checks.Warning(
                f"brama_sql could not read its schema in database {alias!r}: {error}",
                id=UNREACHABLE,
            )
        ]
    if found is None:
        return []
    return [
        checks.Warning(
            f"brama_sql's schema in database {alias!r} is not current: {found}",
            hint="Run `python manage.py migrate` (it upgrades brama_sql's tables to the head).",
            id=SCHEMA_BEHIND,
        )
    ]
