"""The read-only status page: every connection's live state and metrics, and its state over the
last 24 hours drawn as server-side SVG, as an HTML page or as its JSON twin.

Framework-free: :func:`status_page_html` and :func:`status_page_data` take a :class:`Brama` and
return a string or a dict; the Flask extension (``brama_sql.contrib.flask``) and any other host
serve them. Two reads, whatever the log's size: the ``transition`` events of the window for the
connections whose row says they changed state in it (``last_transition_at``, through the
``(occurred_at)`` index), then :meth:`Brama.connections`. The state at the window's start is the
first transition's ``from_state``, or the row's stored state for a connection that made none.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, select

from brama_sql.brama import Brama
from brama_sql.circuit import Kind, State
from brama_sql.records import ConnectionStatus
from brama_sql.schema import api_scope, connections, events

WINDOW = timedelta(hours=24)
"""How far back the timelines reach."""
STATE_COLOURS = {
    State.CLOSED: "#2e7d32",
    State.HALF_OPEN: "#f9a825",
    State.OPEN: "#c62828",
    State.UNKNOWN: "#9e9e9e",
    State.DISABLED: "#1565c0",
    State.FORCED_OPEN: "#6a1b9a",
}
SVG_WIDTH = 1000
"""The width of a timeline in SVG user units (it is scaled to the table column)."""

Key = tuple[str, str | None]


@dataclass(frozen=True)
class Segment:
    """A stretch of a connection's timeline in one state."""

    state: State
    start: datetime
    end: datetime


@dataclass(frozen=True)
class _Window:
    start: datetime
    end: datetime
    transitions: dict[Key, list[tuple[datetime, State, State]]]
    stored_states: dict[Key, State]


def status_page_data(brama: Brama, *, show_metadata: bool = False) -> dict[str, Any]:
    """The status page as plain JSON-ready data: the window, a count per state and, per
    connection, its live status, metrics and 24-hour timeline (``[{"state", "start", "end"}]``).

    ``metadata`` holds the connection's metadata only when ``show_metadata`` is true; otherwise
    it is ``None`` and ``metadata_keys`` names its keys, without their values.
    """
    window, statuses = _read(brama)
    listed = []
    for status in statuses:
        timeline = _timeline(status, window)
        listed.append(
            {
                "identifier": status.identifier,
                "scope": status.scope,
                "state": status.state.value,
                "available": status.available,
                "failure_count": status.failure_count,
                "failure_threshold": status.failure_threshold,
                "expiry": status.expiry,
                "total_successes": status.total_successes,
                "total_failures": status.total_failures,
                "success_rate": status.success_rate,
                "registered_at": status.registered_at.isoformat(),
                "state_changed_at": status.state_changed_at.isoformat(),
                "time_since_state_change": status.time_since_state_change,
                "opened_at": _iso(status.opened_at),
                "last_failure_time": _iso(status.last_failure_time),
                "last_success_time": _iso(status.last_success_time),
                "trips_in_window": _trips(status, window),
                "metadata_keys": sorted(status.metadata),
                "metadata": dict(status.metadata) if show_metadata else None,
                "timeline": [
                    {
                        "state": segment.state.value,
                        "start": segment.start.isoformat(),
                        "end": segment.end.isoformat(),
                    }
                    for segment in timeline
                ],
            }
        )
    return {
        "generated_at": window.end.isoformat(),
        "window": {
            "start": window.start.isoformat(),
            "end": window.end.isoformat(),
            "seconds": WINDOW.total_seconds(),
        },
        "states": {state.value: sum(s.state is state for s in statuses) for state in State},
        "connections": listed,
    }


def status_page_html(
    brama: Brama, *, show_metadata: bool = False, json_url: str | None = None
) -> str:
    """The status page as a complete HTML document (no JavaScript): a summary per state and a
    table of every connection with its state, metrics and 24-hour timeline as inline SVG.

    Metadata values are shown only with ``show_metadata``; ``json_url``, when given, is linked
    as the page's JSON twin.
    """
    window, statuses = _read(brama)
    counts = {state: sum(s.state is state for s in statuses) for state in State}
    summary = " ".join(
        f'<span class="badge state-{state.value}">{_state_label(state)}: {counts[state]}</span>'
        for state in (
            State.OPEN,
            State.HALF_OPEN,
            State.CLOSED,
            State.UNKNOWN,
            *(forced for forced in (State.FORCED_OPEN, State.DISABLED) if counts[forced]),
        )
    )
    rows = "\n".join(_row(status, window, show_metadata) for status in statuses)
    if not statuses:
        rows = '<tr><td colspan="10" class="empty">No connections registered.</td></tr>'
    twin = "" if json_url is None else f' · <a href="{_e(json_url)}">JSON</a>'
    generated = window.end.strftime("%Y-%m-%d %H:%M:%S UTC")
    return _PAGE.format(
        summary=summary,
        rows=rows,
        twin=twin,
        generated=_e(generated),
        window_start=_e(window.start.strftime("%Y-%m-%d %H:%M UTC")),
        legend=_legend(),
        total=len(statuses),
    )


# -- reading ----------------------------------------------------------------------------------


def _read(brama: Brama) -> tuple[_Window, list[ConnectionStatus]]:
    """The window's transitions and stored states, then the live statuses (read second, so a
    transition made in between shows in the status and is added to the timeline)."""

    def body(conn: Connection) -> _Window:
        end = brama._store.now(conn)
        start = end - WINDOW
        changed = select(connections.c.id).where(connections.c.last_transition_at >= start)
        found: dict[Key, list[tuple[datetime, State, State]]] = {}
        rows = conn.execute(
            select(
                events.c.identifier,
                events.c.scope,
                events.c.occurred_at,
                events.c.from_state,
                events.c.to_state,
            )
            .where(
                events.c.occurred_at >= start,
                events.c.kind == Kind.TRANSITION.value,
                events.c.connection_id.in_(changed),
            )
            .order_by(events.c.occurred_at, events.c.id)
        )
        for row in rows:
            key = (row.identifier, api_scope(row.scope))
            found.setdefault(key, []).append(
                (row.occurred_at, State(row.from_state), State(row.to_state))
            )
        stored = {
            (row.identifier, api_scope(row.scope)): State(row.state)
            for row in conn.execute(
                select(connections.c.identifier, connections.c.scope, connections.c.state)
            )
        }
        return _Window(start, end, found, stored)

    window = brama._store.run("status_page", body, write=False)
    return window, brama.connections()


def _timeline(status: ConnectionStatus, window: _Window) -> list[Segment]:
    """The connection's states over the window, from its registration if that is later; the
    live state ends it (a due expiry no call has persisted yet included)."""
    key = (status.identifier, status.scope)
    now = max(window.end, status.state_changed_at)
    begin = min(max(window.start, status.registered_at), now)
    transitions = window.transitions.get(key, [])
    state = transitions[0][1] if transitions else window.stored_states.get(key, status.state)
    changes: list[tuple[datetime, State]] = [(begin, state)]
    for occurred_at, _, to_state in transitions:
        changes.append((max(occurred_at, begin), to_state))
    if changes[-1][1] is not status.state:
        changes.append((max(status.state_changed_at, changes[-1][0], begin), status.state))
    segments: list[Segment] = []
    for (start, state), (end, _) in zip(changes, [*changes[1:], (now, status.state)], strict=True):
        if end <= start:
            continue
        if segments and segments[-1].state is state:
            segments[-1] = Segment(state, segments[-1].start, end)
        else:
            segments.append(Segment(state, start, end))
    return segments


def _trips(status: ConnectionStatus, window: _Window) -> int:
    """Transitions to ``open`` logged in the window."""
    logged = window.transitions.get((status.identifier, status.scope), [])
    return sum(to in (State.OPEN, State.FORCED_OPEN) for _, _, to in logged)


# -- rendering --------------------------------------------------------------------------------


def _svg(segments: Sequence[Segment], window: _Window, label: str) -> str:
    span = (window.end - window.start).total_seconds()

    def x(moment: datetime) -> float:
        offset = (moment - window.start).total_seconds()
        return round(min(max(offset / span, 0.0), 1.0) * SVG_WIDTH, 2)

    rects = []
    for segment in segments:
        left, right = x(segment.start), x(segment.end)
        width = max(right - left, 0.5)
        tip = (
            f"{_state_label(segment.state)} from "
            f"{segment.start.strftime('%Y-%m-%d %H:%M:%S')} to "
            f"{segment.end.strftime('%Y-%m-%d %H:%M:%S')} UTC"
        )
        rects.append(
            f'<rect x="{left}" y="0" width="{width}" height="16" '
            f'fill="{STATE_COLOURS[segment.state]}" class="seg-{segment.state.value}">'
            f"<title>{_e(tip)}</title></rect>"
        )
    return (
        f'<svg class="timeline" viewBox="0 0 {SVG_WIDTH} 16" preserveAspectRatio="none" '
        f'role="img" aria-label="{_e(label)}" xmlns="http://www.w3.org/2000/svg">'
        f'<rect x="0" y="0" width="{SVG_WIDTH}" height="16" fill="#eeeeee"/>'
        f"{''.join(rects)}</svg>"
    )


def _row(status: ConnectionStatus, window: _Window, show_metadata: bool) -> str:
    segments = _timeline(status, window)
    name = status.identifier if status.scope is None else f"{status.scope} / {status.identifier}"
    label = f"state of {name} over the last 24 hours: " + ", ".join(
        _state_label(segment.state) for segment in segments
    )
    rate = "-" if status.success_rate is None else f"{status.success_rate:.1%}"
    if status.metadata and show_metadata:
        metadata = "<br>".join(
            f"{_e(str(key))}={_e(str(value))}" for key, value in sorted(status.metadata.items())
        )
    elif status.metadata:
        metadata = f'<span class="hidden">hidden ({_plural(len(status.metadata), "key")})</span>'
    else:
        metadata = ""
    return (
        f'<tr class="connection state-row-{status.state.value}">'
        f'<td class="scope">{_e(status.scope or "")}</td>'
        f'<td class="identifier">{_e(status.identifier)}</td>'
        f'<td><span class="badge state-{status.state.value}">'
        f"{_state_label(status.state)}</span></td>"
        f'<td class="num">{status.failure_count}/{status.failure_threshold}</td>'
        f'<td class="num">{status.total_successes}</td>'
        f'<td class="num">{status.total_failures}</td>'
        f'<td class="num">{rate}</td>'
        f'<td class="num">{_e(_duration(status.time_since_state_change))}</td>'
        f'<td class="timeline-cell">{_svg(segments, window, label)}'
        f'<div class="trips">{_plural(_trips(status, window), "trip")} in 24 h</div></td>'
        f'<td class="metadata">{metadata}</td>'
        "</tr>"
    )


def _legend() -> str:
    return (
        " ".join(
            f'<span class="swatch" style="background:{colour}"></span>{_state_label(state)}'
            for state, colour in STATE_COLOURS.items()
        )
        + ' <span class="swatch" style="background:#eeeeee"></span>not registered'
    )


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _state_label(state: State) -> str:
    return state.value.replace("_", "-")


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f}s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60}m {whole % 60:02d}s"
    if whole < 86_400:
        return f"{whole // 3600}h {whole % 3600 // 60:02d}m"
    return f"{whole // 86_400}d {whole % 86_400 // 3600:02d}h"


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _e(text: str) -> str:
    return html.escape(text, quote=True)


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>brama_sql status</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5rem; color: #212121; }}
h1 {{ font-size: 1.4rem; margin: 0 0 .5rem; }}
.meta {{ color: #616161; font-size: .9rem; margin-bottom: 1rem; }}
table {{ border-collapse: collapse; width: 100%; font-size: .9rem; }}
th, td {{ padding: .3rem .5rem; border-bottom: 1px solid #e0e0e0; text-align: left;
  vertical-align: middle; }}
th {{ background: #fafafa; }}
td.num, th.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
.badge {{ display: inline-block; padding: .1rem .5rem; border-radius: .8rem; color: #fff;
  font-size: .8rem; white-space: nowrap; }}
.state-closed {{ background: #2e7d32; }}
.state-open {{ background: #c62828; }}
.state-half_open {{ background: #f9a825; color: #212121; }}
.state-unknown {{ background: #9e9e9e; }}
.state-disabled {{ background: #1565c0; }}
.state-forced_open {{ background: #6a1b9a; }}
.timeline-cell {{ width: 34%; min-width: 12rem; }}
svg.timeline {{ width: 100%; height: 16px; display: block; }}
.trips {{ color: #757575; font-size: .75rem; }}
.swatch {{ display: inline-block; width: .8rem; height: .8rem; margin: 0 .2rem 0 .6rem;
  vertical-align: middle; }}
.hidden, .empty {{ color: #9e9e9e; }}
</style>
</head>
<body>
<h1>brama_sql status</h1>
<div class="meta">{total} connections · generated {generated}{twin}</div>
<div class="summary">{summary}</div>
<p class="meta">Timelines: {window_start} to now. {legend}</p>
<table>
<thead><tr><th>Scope</th><th>Connection</th><th>State</th>
<th class="num">Failures</th><th class="num">Successes</th><th class="num">Failed</th>
<th class="num">Success rate</th><th class="num">In state for</th>
<th>Last 24 hours</th><th>Metadata</th></tr></thead>
<tbody>
{rows}
</tbody>
</table>
</body>
</html>
"""
