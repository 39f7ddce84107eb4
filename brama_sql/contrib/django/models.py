"""Unmanaged models over brama_sql's tables, for the read-only admin.

Django never creates, alters or flushes these tables (``managed = False``): brama_sql's
migrations own them. A row's ``state`` may be stale (an open circuit past its expiry is
half-open, lazily); the admin shows the live state from the API.
"""

from __future__ import annotations

from django.db import models

from brama_sql.schema import api_scope


class Connection(models.Model):
    """A row of ``brama_connections``: one monitored connection."""

    identifier = models.CharField(max_length=255)
    scope = models.CharField(max_length=255, help_text="Empty: unscoped.")
    state = models.CharField("stored state", max_length=16)
    failure_count = models.IntegerField()
    opened_at = models.DateTimeField(null=True)
    failure_threshold = models.IntegerField()
    expiry = models.FloatField(help_text="Seconds.")
    half_open_max_calls = models.IntegerField(null=True)
    probe_timeout = models.FloatField(null=True)
    metadata = models.JSONField()
    registered_at = models.DateTimeField()
    successes = models.BigIntegerField()
    failures = models.BigIntegerField()
    last_transition_at = models.DateTimeField(null=True)
    last_event_at = models.DateTimeField(null=True)

    class Meta:
        managed = False
        db_table = "brama_connections"
        ordering = ("identifier", "scope")
        verbose_name = "circuit"
        verbose_name_plural = "circuits"

    def __str__(self) -> str:
        return self.identifier if not self.scope else f"{self.identifier} (scope {self.scope})"

    @property
    def api_scope(self) -> str | None:
        """The scope as the API takes it (``None`` for unscoped)."""
        return api_scope(self.scope)


class Event(models.Model):
    """A row of ``brama_events``: one entry of the append-only log."""

    id = models.BigAutoField(primary_key=True)
    connection = models.ForeignKey(
        Connection,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="events",
    )
    identifier = models.CharField(max_length=255)
    scope = models.CharField(max_length=255)
    kind = models.CharField(max_length=16)
    occurred_at = models.DateTimeField()
    from_state = models.CharField(max_length=16, null=True)
    to_state = models.CharField(max_length=16, null=True)
    reason = models.TextField(null=True)
    failure_count = models.IntegerField()
    cause = models.CharField(max_length=16, null=True)
    probe = models.BooleanField()
    actor = models.CharField(max_length=255, null=True)
    details = models.JSONField(null=True)

    class Meta:
        managed = False
        db_table = "brama_events"
        ordering = ("-id",)
        verbose_name = "circuit event"
        verbose_name_plural = "circuit events"

    def __str__(self) -> str:
        return f"{self.kind} of {self.identifier} at {self.occurred_at:%Y-%m-%d %H:%M:%S}"
