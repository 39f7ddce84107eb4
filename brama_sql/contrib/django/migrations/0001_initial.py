"""Create brama_sql's tables by running its Alembic revisions to the head on Django's
connection; reversed, drop them. Only in the database named by ``BRAMA_SQL["DATABASE"]``.

Later Alembic revisions need no new Django migration: every ``manage.py migrate`` upgrades
the tables to the head (see :mod:`brama_sql.contrib.django.schema`).
"""

from __future__ import annotations

from typing import Any, ClassVar

from django.db import migrations, models


def create(apps: Any, schema_editor: Any) -> None:
    from brama_sql.contrib.django import schema
    from brama_sql.contrib.django.runtime import read_config

    alias = schema_editor.connection.alias
    if alias == read_config().database:
        schema.upgrade(alias)


def drop(apps: Any, schema_editor: Any) -> None:
    from brama_sql.contrib.django import schema
    from brama_sql.contrib.django.runtime import read_config

    alias = schema_editor.connection.alias
    if alias == read_config().database:
        schema.drop(alias)


class Migration(migrations.Migration):
    initial = True
    dependencies: ClassVar[list[tuple[str, str]]] = []

    operations: ClassVar[list[Any]] = [
        # Not inside an atomic block of its own on MySQL, whose DDL commits implicitly.
        migrations.RunPython(create, drop, atomic=False),
        migrations.CreateModel(
            name="Connection",
            fields=[
                ("id", models.AutoField(primary_key=True, serialize=False)),
                ("identifier", models.CharField(max_length=255)),
                ("scope", models.CharField(max_length=255)),
                ("state", models.CharField(max_length=16)),
                ("failure_count", models.IntegerField()),
                ("opened_at", models.DateTimeField(null=True)),
                ("failure_threshold", models.IntegerField()),
                ("expiry", models.FloatField()),
                ("half_open_max_calls", models.IntegerField(null=True)),
                ("probe_timeout", models.FloatField(null=True)),
                ("metadata", models.JSONField()),
                ("registered_at", models.DateTimeField()),
                ("successes", models.BigIntegerField()),
                ("failures", models.BigIntegerField()),
                ("last_transition_at", models.DateTimeField(null=True)),
                ("last_event_at", models.DateTimeField(null=True)),
            ],
            options={
                "db_table": "brama_connections",
                "managed": False,
                "ordering": ("identifier", "scope"),
                "verbose_name": "circuit",
                "verbose_name_plural": "circuits",
            },
        ),
        migrations.CreateModel(
            name="Event",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("identifier", models.CharField(max_length=255)),
                ("scope", models.CharField(max_length=255)),
                ("kind", models.CharField(max_length=16)),
                ("occurred_at", models.DateTimeField()),
                ("from_state", models.CharField(max_length=16, null=True)),
                ("to_state", models.CharField(max_length=16, null=True)),
                ("reason", models.TextField(null=True)),
                ("failure_count", models.IntegerField()),
                ("cause", models.CharField(max_length=16, null=True)),
                ("probe", models.BooleanField()),
                ("actor", models.CharField(max_length=255, null=True)),
                ("details", models.JSONField(null=True)),
                (
                    "connection",
                    models.ForeignKey(
                        db_constraint=False,
                        on_delete=models.DO_NOTHING,
                        related_name="events",
                        to="brama_sql.connection",
                    ),
                ),
            ],
            options={
                "db_table": "brama_events",
                "managed": False,
                "ordering": ("-id",),
                "verbose_name": "circuit event",
                "verbose_name_plural": "circuit events",
            },
        ),
    ]
