"""The read-only admin of circuits and their events, with open/close/reset actions.

The list shows each circuit's live state from the API (``Brama.status()``: an open circuit
past its expiry is half-open even while its row still says open); the actions go through the
API too (``Brama.open()``/``close()``/``reset()``: row-locked, logged as manual transitions
with the admin user as the reason). Nothing is ever added, edited or deleted here.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from brama_sql.circuit import Cause, Kind
from brama_sql.contrib.django.models import Connection, Event
from brama_sql.contrib.django.runtime import get_brama, read_config
from brama_sql.errors import BramaError
from brama_sql.records import ConnectionStatus

NO_VALUE = "-"


class _ReadOnly(admin.ModelAdmin):
    """Viewable by staff with the view permission; never added, changed or deleted."""

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        return super().get_queryset(request).using(read_config().database)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


def _live(connection: Connection) -> ConnectionStatus | None:
    """The circuit's status from the API, read once per row of a page."""
    cached: ConnectionStatus | bool | None = getattr(connection, "_brama_status", False)
    if cached is not False:
        return cached if isinstance(cached, ConnectionStatus) else None
    try:
        status: ConnectionStatus | None = get_brama().status(
            connection.identifier, scope=connection.api_scope
        )
    except BramaError:
        status = None
    connection._brama_status = status
    return status


class _EnumFilter(admin.SimpleListFilter):
    """A filter on a column whose values are those of one of brama_sql's enums: its choices
    come from the enum, not from a ``SELECT DISTINCT`` over the whole log."""

    values: tuple[str, ...] = ()

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(value, value) for value in self.values]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if value is None:
            return queryset
        return queryset.filter(**{self.parameter_name: value})


class _KindFilter(_EnumFilter):
    title = "kind"
    parameter_name = "kind"
    values = tuple(kind.value for kind in Kind)


class _CauseFilter(_EnumFilter):
    title = "cause"
    parameter_name = "cause"
    values = tuple(cause.value for cause in Cause)


@admin.register(Connection)
class ConnectionAdmin(_ReadOnly):
    """Circuits with their live state; actions open, close and reset them through the API."""

    list_display = (
        "identifier",
        "scope_shown",
        "live_state",
        "consecutive_failures",
        "successes",
        "failures",
        "last_transition_at",
        "events_link",
    )
    list_display_links = ("identifier",)
    search_fields = ("identifier", "scope")
    actions = ("open_circuits", "close_circuits", "reset_circuits")
    readonly_fields = ("live_state", "consecutive_failures")

    @admin.display(description="scope", ordering="scope")
    def scope_shown(self, obj: Connection) -> str:
        """The scope, or ``-`` for unscoped."""
        return obj.scope or NO_VALUE

    @admin.display(description="state (live)")
    def live_state(self, obj: Connection) -> str:
        """The state the API reports now."""
        status = _live(obj)
        return NO_VALUE if status is None else str(status.state.value)

    @admin.display(description="failures / threshold")
    def consecutive_failures(self, obj: Connection) -> str:
        """Consecutive failures against the threshold, live."""
        status = _live(obj)
        if status is None:
            return NO_VALUE
        return f"{status.failure_count}/{status.failure_threshold}"

    @admin.display(description="events")
    def events_link(self, obj: Connection) -> str:
        """A link to the circuit's events."""
        url = reverse("admin:brama_sql_event_changelist")
        link: str = format_html('<a href="{}?connection__id__exact={}">events</a>', url, obj.pk)
        return link

    def has_operate_permission(self, request: HttpRequest) -> bool:
        """Who may open, close and reset circuits: staff with the change permission on
        circuits (superusers have it)."""
        return bool(request.user.has_perm("brama_sql.change_connection"))

    def _force(self, request: HttpRequest, queryset: QuerySet[Any], action: str) -> None:
        brama = get_brama()
        reason = f"admin: {request.user.get_username()}"
        done = 0
        for connection in queryset:
            try:
                getattr(brama, action)(
                    connection.identifier, scope=connection.api_scope, reason=reason
                )
            except BramaError as error:
                self.message_user(request, f"{connection}: {error}", messages.ERROR)
            else:
                done += 1
        noun = "circuit" if done == 1 else "circuits"
        past = {"open": "opened", "close": "closed", "reset": "reset"}[action]
        self.message_user(request, f"{past.capitalize()} {done} {noun}.", messages.SUCCESS)

    @admin.action(description="Open the selected circuits", permissions=["operate"])
    def open_circuits(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        """Open: calls are refused until the expiry."""
        self._force(request, queryset, "open")

    @admin.action(description="Close the selected circuits", permissions=["operate"])
    def close_circuits(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        """Close: calls are admitted again."""
        self._force(request, queryset, "close")

    @admin.action(description="Reset the selected circuits", permissions=["operate"])
    def reset_circuits(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        """Reset: a clean closed circuit, counts cleared."""
        self._force(request, queryset, "reset")


@admin.register(Event)
class EventAdmin(_ReadOnly):
    """The event log, newest first."""

    list_display = (
        "id",
        "occurred_at",
        "identifier",
        "scope",
        "kind",
        "change",
        "failure_count",
        "reason",
        "actor",
    )
    list_filter = (_KindFilter, _CauseFilter)
    search_fields = ("identifier", "scope", "reason")
    show_full_result_count = False

    @admin.display(description="change")
    def change(self, obj: Event) -> str:
        """``from -> to`` of a transition."""
        if obj.from_state is None and obj.to_state is None:
            return NO_VALUE
        return f"{obj.from_state or NO_VALUE} -> {obj.to_state or NO_VALUE}"
