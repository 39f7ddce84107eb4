"""The ``brama-sql`` command line: migrate, inspect and clean up the tables, or run the demo."""

from __future__ import annotations

import dataclasses
import enum
import json
import re
import textwrap
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, ClassVar

import click
from click.core import ParameterSource
from sqlalchemy.engine import URL
from sqlalchemy.exc import SQLAlchemyError

from brama_sql import demo as tour
from brama_sql import migration, options, replay
from brama_sql.brama import Brama
from brama_sql.circuit import Kind
from brama_sql.engine import DEFAULT_URL
from brama_sql.errors import BramaError, InvalidArgumentError, NotRegisteredError, describe
from brama_sql.pruning import BATCH_SIZE
from brama_sql.records import ConnectionReport, ConnectionStatus, Event
from brama_sql.store import PAGE_SIZE

URL_ENVVAR = "BRAMA_SQL_URL"
NO_VALUE = "-"


@dataclass
class Runtime:
    """What the commands share. Tests may pass their own through ``CliRunner.invoke(obj=...)``."""

    url: str = DEFAULT_URL
    sleep: Callable[[float], None] = time.sleep
    """How the demo waits out its expiry."""

    def brama(self, ctx: click.Context, *, creates: bool = False, **options: Any) -> Brama:
        """A :class:`Brama` on ``url``, disposed when the command ends.

        Unless the command ``creates`` the database (``migrate``, ``demo``), an SQLite file
        that does not exist is an error: opening it would create an empty file at a mistyped
        path.
        """
        try:
            brama = Brama(self.url, **options)
        except InvalidArgumentError as error:
            if error.argument != "url":
                raise
            raise _UnusableUrl(f"Invalid value for '--url': {_one_line(error)}") from None
        ctx.call_on_close(brama.dispose)
        if not creates:
            _require_sqlite_file(brama.engine.url)
        return brama


class _UnusableUrl(click.ClickException):
    """A URL brama_sql cannot use: one line on stderr, and exit code 2, as for usage errors."""

    exit_code = 2


def _require_sqlite_file(url: URL) -> None:
    """Raise a one-line error when ``url`` names an SQLite file that does not exist."""
    database = url.database
    if url.get_backend_name() != "sqlite" or database in (None, "", ":memory:"):
        return
    assert database is not None
    if str(url.query.get("uri", "")).lower() in ("true", "1") or database.startswith("file:"):
        return  # an SQLite URI: its own mode= says whether it may create the file
    if not Path(database).exists():
        raise click.ClickException(
            f"no SQLite database at {database}: check --url, or create it with `brama-sql migrate`"
        )


class _Group(click.Group):
    """A group that turns brama_sql's errors into a one-line message and exit code 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BramaError as error:
            raise click.ClickException(_one_line(error)) from None
        except SQLAlchemyError as error:
            cause = getattr(error, "orig", None) or error
            raise click.ClickException(f"database error: {_one_line(cause)}") from None


def _one_line(error: BaseException) -> str:
    """The error's message with its lines and indentation folded into one line."""
    return " ".join(str(error).split()) or type(error).__name__


@click.group(cls=_Group, name="brama-sql")
@click.option(
    "--url",
    envvar=URL_ENVVAR,
    default=DEFAULT_URL,
    show_default=True,
    show_envvar=True,
    metavar="URL",
    help="SQLAlchemy database URL of the brama_sql tables.",
)
@click.version_option(package_name="brama_sql")
@click.pass_context
def main(ctx: click.Context, url: str) -> None:
    """brama_sql: circuit breakers whose state and event log live in SQL."""
    runtime = ctx.ensure_object(Runtime)
    runtime.url = url


@main.command()
@click.pass_context
def migrate(ctx: click.Context) -> None:
    """Create or upgrade brama_sql's tables to the newest revision (idempotent)."""
    brama = _runtime(ctx).brama(ctx, creates=True)
    before = _revision(brama)
    brama.migrate()
    after = _revision(brama)
    head = migration.head()
    marker = " (head)" if after == head else f" (head is {head})"
    if before == after:
        click.echo(f"Already at revision {after}{marker}.")
    else:
        click.echo(f"Migrated from {before or 'an empty database'} to revision {after}{marker}.")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of every status field.")
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Show every connection: its circuit and metrics."""
    brama = _runtime(ctx).brama(ctx)
    statuses = brama.connections()
    if as_json:
        click.echo(_json([_record(item) for item in statuses]))
        return
    if not statuses:
        click.echo("No connections registered.")
        return
    headers = [
        "SCOPE",
        "IDENTIFIER",
        "STATE",
        "FAILURES",
        "SUCCESSES",
        "FAILED",
        "SUCCESS RATE",
        "IN STATE FOR",
    ]
    rows = [
        [
            _text(item.scope),
            item.identifier,
            item.state.value,
            f"{item.failure_count}/{item.failure_threshold}",
            str(item.total_successes),
            str(item.total_failures),
            NO_VALUE if item.success_rate is None else f"{item.success_rate:.1%}",
            _duration(item.time_since_state_change),
        ]
        for item in statuses
    ]
    click.echo(_table(headers, rows, numeric={3, 4, 5, 6, 7}))
    click.echo("FAILURES: consecutive failures / threshold; SUCCESSES, FAILED: totals.")
    policies = [(item, _policies(item)) for item in statuses]
    shown = [(item, text) for item, text in policies if text]
    if shown:
        click.echo("POLICIES:")
        for item, text in shown:
            click.echo(f"  {describe(item.identifier, item.scope)}: {text}")


def _policies(item: ConnectionStatus) -> str:
    """The backoff and rate policies of a connection, in one line ('' when it has none)."""
    parts = []
    if item.expiry_strategy != "fixed":
        cap = "" if item.max_expiry is None else f" up to {_duration(item.max_expiry)}"
        parts.append(f"backoff x{item.backoff_factor:g}{cap}")
    if item.current_expiry is not None and item.current_expiry != item.expiry:
        parts.append(f"open period {_duration(item.current_expiry)}")
    if item.next_probe_at is not None and parts:
        parts.append(f"next probe at {item.next_probe_at.isoformat(sep=' ', timespec='seconds')}")
    window = _duration(60.0 if item.window is None else item.window)
    minimum = 10 if item.minimum_calls is None else item.minimum_calls
    if item.failure_rate_threshold is not None:
        parts.append(f"opens at {item.failure_rate_threshold:.0%} failures")
    if item.slow_call_rate_threshold is not None and item.slow_call_duration is not None:
        parts.append(
            f"opens at {item.slow_call_rate_threshold:.0%} calls slower than "
            f"{_duration(item.slow_call_duration)}"
        )
    if item.failure_rate_threshold is not None or item.slow_call_rate_threshold is not None:
        parts.append(
            f"window {window}, min {minimum} calls: {item.window_calls} calls, "
            f"{item.window_failures} failed, {item.window_slow_calls} slow"
        )
    return "; ".join(parts)


_FRACTION = re.compile(r"(T?\d{2}:\d{2}:\d{2})\.(\d{1,6})")


def _iso_for_python_3_10(text: str) -> str:
    """``text`` in the ISO forms that ``datetime.fromisoformat`` reads on Python 3.10 too: a
    trailing ``Z`` as ``+00:00`` and a fraction of a second padded to six digits."""
    if text[-1:] in ("z", "Z"):
        text = text[:-1] + "+00:00"
    return _FRACTION.sub(lambda found: f"{found[1]}.{found[2].ljust(6, '0')}", text, count=1)


class _Moment(click.ParamType):  # type: ignore[type-arg,unused-ignore]
    """A moment: an ISO 8601 time (UTC unless it names a zone) or a duration before now
    (``90s``, ``30m``, ``1h``, ``7d``, ``2w`` or seconds)."""

    name = "TIME|DURATION"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, datetime):
            return value
        text = str(value).strip()
        try:
            moment = datetime.fromisoformat(_iso_for_python_3_10(text))
        except ValueError:
            pass
        else:
            return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)
        try:
            seconds = _Duration().convert(text, param, ctx)
        except click.BadParameter:
            self.fail(
                f"{value!r} is neither an ISO time such as 2031-06-01T08:00:00Z nor a duration "
                "such as 90s, 30m, 1h or 7d",
                param,
                ctx,
            )
        return datetime.now(timezone.utc) - timedelta(seconds=seconds)


EVENT_HEADERS = ["ID", "OCCURRED AT", "SCOPE", "IDENTIFIER", "KIND", "CHANGE", "FAILURES", "REASON"]


@main.command()
@click.argument("identifier", required=False)
@click.option(
    "--scope",
    default=None,
    help="Only this scope (an empty string selects unscoped connections). Default: every scope.",
)
@click.option(
    "--since",
    type=_Moment(),
    default=None,
    help="Only events at or after this time: ISO 8601 (UTC unless zoned) or 90s, 30m, 1h, 7d ago.",
)
@click.option(
    "--until",
    type=_Moment(),
    default=None,
    help="Only events before this time (same forms as --since).",
)
@click.option(
    "--kind",
    "kinds",
    type=click.Choice([kind.value for kind in Kind]),
    multiple=True,
    help="Only events of this kind (repeatable).",
)
@click.option(
    "--newest",
    type=click.IntRange(min=0),
    default=None,
    help="Only the newest N matching events (still printed oldest first).",
)
@click.option("--limit", type=click.IntRange(min=0), default=None, help="At most this many events.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of every event field.")
@click.pass_context
def events(
    ctx: click.Context,
    identifier: str | None,
    scope: str | None,
    since: datetime | None,
    until: datetime | None,
    kinds: tuple[str, ...],
    newest: int | None,
    limit: int | None,
    as_json: bool,
) -> None:
    """Show the event log, oldest first: of IDENTIFIER, or of every connection.

    Streams: the log is read and printed a page at a time, so any size of log prints in
    constant memory.
    """
    brama = _runtime(ctx).brama(ctx)
    filters: dict[str, Any] = {"since": since, "until": until, "newest": newest, "limit": limit}
    if scope is not None:
        filters["scope"] = scope or None
    if kinds:
        filters["kinds"] = kinds
    logged = brama.stream_events(identifier, **filters)
    if as_json:
        _stream_json(_record(event) for event in logged)
        return
    widths: list[int] | None = None
    page: list[list[str]] = []
    for event in logged:
        page.append(_event_cells(event))
        if len(page) == PAGE_SIZE:
            widths = _print_page(page, widths)
            page = []
    if page or widths is not None:
        _print_page(page, widths)
    else:
        click.echo("No events.")


def _event_cells(event: Event) -> list[str]:
    return [
        str(event.id),
        event.occurred_at.isoformat(sep=" ", timespec="milliseconds"),
        _text(event.scope),
        event.identifier,
        event.kind.value,
        _change(event),
        str(event.failure_count),
        _text(event.reason),
    ]


def _print_page(rows: list[list[str]], widths: list[int] | None) -> list[int]:
    """Print a page of event rows (and the header before the first page); columns grow to
    the widest cell seen so far, so a page never needs the ones after it."""
    first = widths is None
    grown = [
        max(
            [len(row[i]) for row in [EVENT_HEADERS, *rows]]
            + ([] if widths is None else [widths[i]])
        )
        for i in range(len(EVENT_HEADERS))
    ]
    lines = _table(EVENT_HEADERS, rows, numeric={0, 6}, widths=grown).split("\n")
    click.echo("\n".join(lines if first else lines[1:]))
    return grown


def _stream_json(items: Iterable[dict[str, Any]]) -> None:
    """Print ``items`` as one indented JSON list, an item at a time."""
    opened = False
    for item in items:
        text = textwrap.indent(_json(item), "  ")
        click.echo(("[\n" if not opened else ",\n") + text, nl=False)
        opened = True
    click.echo("\n]" if opened else "[]")


@main.command()
@click.option(
    "--since",
    type=_Moment(),
    default="1h",
    show_default=True,
    help="Start of the window: ISO 8601 (UTC unless zoned) or 90s, 30m, 1h, 7d ago.",
)
@click.option(
    "--scope",
    default=None,
    help="Only this scope (an empty string selects unscoped connections). Default: every scope.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_context
def report(ctx: click.Context, since: datetime, scope: str | None, as_json: bool) -> None:
    """Per connection since a moment: reports, failures, success rate, trips, time open."""
    brama = _runtime(ctx).brama(ctx)
    found = brama.report(since) if scope is None else brama.report(since, scope=scope or None)
    if as_json:
        click.echo(
            _json(
                {
                    "since": found.since.isoformat(),
                    "until": found.until.isoformat(),
                    "connections": [_record(item) for item in found.connections],
                }
            )
        )
        return
    window = _duration((found.until - found.since).total_seconds())
    click.echo(
        f"From {found.since.isoformat(sep=' ', timespec='seconds')} "
        f"to {found.until.isoformat(sep=' ', timespec='seconds')} ({window})."
    )
    if not found.connections:
        click.echo("No connections registered.")
        return
    headers = [
        "SCOPE",
        "IDENTIFIER",
        "STATE",
        "REPORTS",
        "FAILED",
        "SUCCESS RATE",
        "TRIPS",
        "OPEN FOR",
        "LONGEST OPEN",
        "LAST TRANSITION",
    ]
    rows = [
        [
            _text(item.scope),
            item.identifier + ("" if item.complete else " *"),
            item.state.value,
            str(item.reports),
            str(item.failures),
            NO_VALUE if item.success_rate is None else f"{item.success_rate:.1%}",
            str(item.trips),
            _duration(item.time_open),
            _duration(item.longest_open),
            _last_transition(item, found.until),
        ]
        for item in found.connections
    ]
    click.echo(_table(headers, rows, numeric={3, 4, 5, 6, 7, 8}))
    if not all(item.complete for item in found.connections):
        click.echo("*: events of this window were pruned; counts cover the events left.")


def _last_transition(item: ConnectionReport, now: datetime) -> str:
    if item.last_transition_at is None:
        return NO_VALUE
    ago = _duration(max(0.0, (now - item.last_transition_at).total_seconds()))
    if item.last_transition_to is None:
        return f"{ago} ago (pruned)"
    return f"{item.last_transition_from} -> {item.last_transition_to} {ago} ago"


class _OptionalNumber(click.ParamType):  # type: ignore[type-arg,unused-ignore]
    """A number, or ``none`` for "no limit"."""

    name = "NUMBER|none"

    def __init__(self, kind: type[int] | type[float]) -> None:
        self.kind = kind

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if value is None or isinstance(value, (int, float)):
            return value
        if str(value).lower() == "none":
            return None
        try:
            return self.kind(value)
        except ValueError:
            self.fail(f"{value!r} is not a number or 'none'", param, ctx)


@main.command()
@click.argument("identifier")
@click.option("--scope", default=None, help="The connection's scope (default: unscoped).")
@click.option("--failure-threshold", type=int, default=None, help="Consecutive failures that trip.")
@click.option("--expiry", type=float, default=None, metavar="SECONDS", help="Open period.")
@click.option(
    "--half-open-max-calls",
    type=_OptionalNumber(int),
    default=None,
    help="Probe permits at once in half-open, or 'none' for no limit.",
)
@click.option(
    "--probe-timeout",
    type=_OptionalNumber(float),
    default=None,
    metavar="SECONDS|none",
    help="How long a probe permit lasts, or 'none' for the expiry.",
)
@click.option(
    "--expiry-strategy",
    type=click.Choice(["fixed", "exponential"]),
    default=None,
    help="Backoff of the open period.",
)
@click.option("--backoff-factor", type=float, default=None, help="Exponential multiplier (>= 1).")
@click.option(
    "--max-expiry",
    type=_OptionalNumber(float),
    default=None,
    metavar="SECONDS|none",
    help="Cap of the exponential open period, or 'none'.",
)
@click.option(
    "--failure-rate-threshold",
    type=_OptionalNumber(float),
    default=None,
    metavar="RATE|none",
    help="Open at this failure share of the window (0 < r <= 1), or 'none' for off.",
)
@click.option(
    "--window",
    type=_OptionalNumber(float),
    default=None,
    metavar="SECONDS|none",
    help="Span of the rate window, or 'none' for 60.",
)
@click.option(
    "--minimum-calls",
    type=_OptionalNumber(int),
    default=None,
    metavar="NUMBER|none",
    help="Reports the window needs before a rate decides, or 'none' for 10.",
)
@click.option(
    "--slow-call-duration",
    type=_OptionalNumber(float),
    default=None,
    metavar="SECONDS|none",
    help="Calls longer than this are slow, or 'none'.",
)
@click.option(
    "--slow-call-rate-threshold",
    type=_OptionalNumber(float),
    default=None,
    metavar="RATE|none",
    help="Open at this slow share of the window, or 'none' for off.",
)
@click.pass_context
def configure(
    ctx: click.Context,
    /,
    identifier: str,
    scope: str | None,
    failure_threshold: int | None,
    expiry: float | None,
    **given: Any,
) -> None:
    """Change a connection's stored options (logged as a `configured` event)."""
    brama = _runtime(ctx).brama(ctx)
    wanted: dict[str, Any] = {"failure_threshold": failure_threshold, "expiry": expiry}
    for name, value in given.items():
        if ctx.get_parameter_source(name) is not ParameterSource.DEFAULT:
            wanted[name] = value  # given: a value, or None for "none"
    started = datetime.now(timezone.utc)
    brama.configure(identifier, scope=scope, **wanted)
    made = [
        event
        for event in brama.events(identifier, scope=scope, since=started)
        if event.kind is Kind.CONFIGURED and event.actor == brama.actor()
    ]
    changed = _change(made[-1]) if made else "nothing to change"
    click.echo(f"{describe(identifier, scope)}: {changed}.")


def _manual(name: str, action: str, summary: str) -> None:
    """Add the command ``name`` calling ``Brama.<action>(identifier, scope=, reason=)``."""

    @main.command(name=name, help=summary)
    @click.argument("identifier")
    @click.option("--scope", default=None, help="The connection's scope (default: unscoped).")
    @click.option("--reason", default=None, help="Logged with the transition.")
    @click.pass_context
    def command(ctx: click.Context, identifier: str, scope: str | None, reason: str | None) -> None:
        brama = _runtime(ctx).brama(ctx)
        getattr(brama, action)(identifier, scope=scope, reason=reason)
        state = brama.status(identifier, scope=scope).state
        click.echo(f"{describe(identifier, scope)}: {state.value}.")


_manual(
    "disable",
    "disable",
    "Disable a circuit: always available, reports still counted, never trips.",
)
_manual(
    "force-open",
    "force_open",
    "Hold a circuit open: refuses every call, never expires, until close or reset.",
)
_manual("open", "open", "Open a circuit now (it expires into half-open as usual).")
_manual("close", "close", "Close a circuit (also releases disabled and forced-open ones).")
_manual("reset", "reset", "Reset a circuit to a clean closed state.")


@main.command()
@click.option(
    "--inactive-after",
    type=float,
    default=None,
    metavar="SECONDS",
    help="Remove connections idle this long.  [default: 86400]",
)
@click.pass_context
def cleanup(ctx: click.Context, inactive_after: float | None) -> None:
    """Remove connections with no activity for a while (run it from cron)."""
    options: dict[str, Any] = {}
    if inactive_after is not None:
        options["inactive_after"] = inactive_after
    brama = _runtime(ctx).brama(ctx, **options)
    removed = brama.cleanup()
    noun = "connection" if removed == 1 else "connections"
    click.echo(f"Removed {removed} inactive {noun}.")


class _Duration(click.ParamType):  # type: ignore[type-arg,unused-ignore]
    """A duration: seconds, or a number with a unit (``90s``, ``15m``, ``12h``, ``30d``, ``2w``)."""

    name = "DURATION"
    UNITS: ClassVar[dict[str, int]] = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, (int, float)):
            return float(value)
        text = str(value).strip().lower()
        unit = self.UNITS.get(text[-1:], None) if text else None
        number = text[:-1] if unit is not None else text
        try:
            seconds = float(number) * (unit or 1)
        except ValueError:
            self.fail(f"{value!r} is not a duration such as 3600, 90m, 12h or 30d", param, ctx)
        if not seconds > 0 or seconds == float("inf"):
            self.fail(f"{value!r} is not a positive duration", param, ctx)
        return seconds


@main.command()
@click.option(
    "--older-than",
    type=_Duration(),
    required=True,
    help="Delete events older than this: seconds, or 90m, 12h, 30d, 2w.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=BATCH_SIZE,
    show_default=True,
    help="Events deleted per transaction.",
)
@click.pass_context
def prune(ctx: click.Context, older_than: float, batch_size: int) -> None:
    """Delete old events, keeping totals in hourly rollups (run it from cron)."""
    brama = _runtime(ctx).brama(ctx)
    deleted = brama.prune(older_than, batch_size=batch_size)
    noun = "event" if deleted == 1 else "events"
    click.echo(f"Deleted {deleted} {noun} older than {_duration(older_than)}.")


@main.command()
@click.pass_context
def verify(ctx: click.Context) -> None:
    """Check that every connection's log explains its row (replayed through the state machine)."""
    brama = _runtime(ctx).brama(ctx)
    statuses = brama.connections()
    unexplained = 0
    for item in statuses:
        try:
            replay.verify(brama.engine, item.identifier, item.scope)
        except replay.ReplayError as error:
            if not _still_registered(brama, item):
                continue  # unregistered or removed meanwhile: nothing left to explain
            unexplained += 1
            name = describe(item.identifier, item.scope)
            click.echo(f"{name}: {_one_line(error)}", err=True)
    noun = "connection" if len(statuses) == 1 else "connections"
    click.echo(f"Checked {len(statuses)} {noun}: {unexplained} not explained by the log.")
    if unexplained:
        ctx.exit(1)


@main.command()
@click.option(
    "--expiry",
    type=float,
    default=tour.EXPIRY,
    show_default=True,
    metavar="SECONDS",
    help="How long the demo's circuit stays open.",
)
@click.pass_context
def demo(ctx: click.Context, expiry: float) -> None:
    """Watch a circuit trip, wait, probe and recover (the history stays in the database)."""
    runtime = _runtime(ctx)
    brama = runtime.brama(ctx, creates=True)
    tour.run(brama, click.echo, sleep=runtime.sleep, expiry=expiry)


# -- helpers ----------------------------------------------------------------------------------


def _still_registered(brama: Brama, item: ConnectionStatus) -> bool:
    try:
        brama.status(item.identifier, scope=item.scope)
    except NotRegisteredError:
        return False
    return True


def _runtime(ctx: click.Context) -> Runtime:
    return ctx.ensure_object(Runtime)


def _revision(brama: Brama) -> str | None:
    with brama.engine.connect() as connection:
        return migration.current(connection)


def _text(value: str | None) -> str:
    return NO_VALUE if value is None else value


def _change(event: Event) -> str:
    if event.kind is Kind.CONFIGURED and event.details:
        return options.describe(event.details)
    if event.from_state is None and event.to_state is None:
        return NO_VALUE
    return f"{_text(event.from_state)} -> {_text(event.to_state)}"


def _duration(seconds: float) -> str:
    """A short human form: ``4.2s``, ``5m 03s``, ``2h 05m``, ``3d 04h``."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60}m {whole % 60:02d}s"
    if whole < 86_400:
        return f"{whole // 3600}h {whole % 3600 // 60:02d}m"
    return f"{whole // 86_400}d {whole % 86_400 // 3600:02d}h"


def _table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    numeric: set[int],
    widths: Sequence[int] | None = None,
) -> str:
    """Columns padded to their widest cell (or ``widths``); ``numeric`` columns right-aligned."""
    if widths is None:
        widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        padded = [
            cell.rjust(width) if i in numeric else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(padded).rstrip()

    return "\n".join([line(headers), *(line(row) for row in rows)])


def _record(item: ConnectionStatus | Event | ConnectionReport) -> dict[str, Any]:
    return {field.name: _plain(getattr(item, field.name)) for field in dataclasses.fields(item)}


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    return value


def _json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)
