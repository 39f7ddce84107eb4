"""The run's outputs: the machine it ran on, the JSON document, and the Markdown tables."""

from __future__ import annotations

import json
import os
import platform
import sqlite3
import subprocess
from collections.abc import Iterable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.plan import (
    BRAMA,
    CONNECTIONS,
    CORE,
    DRIVER,
    FAST,
    FLEET,
    GUARDED,
    HOT,
    LABELS,
    OPERATIONS,
    PYBREAKER,
    STATUS,
)

PACKAGES = ("brama_sql", "SQLAlchemy", "psycopg", "psycopg-binary", "PyMySQL", "pybreaker", "redis")
DIALECT_NAMES = {"sqlite": "SQLite", "postgresql": "PostgreSQL", "mysql": "MySQL"}


def machine() -> dict[str, Any]:
    """The machine and the client software: CPU, Python, the packages' versions."""
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "sqlite_library": sqlite3.sqlite_version,
        "packages": {name: _version(name) for name in PACKAGES},
    }


def source() -> dict[str, Any]:
    """Which brama_sql was measured: where it was imported from, the checkout's commit and
    whether its ``brama_sql/`` differs from that commit (``None`` outside a git checkout)."""
    import brama_sql

    package = Path(brama_sql.__file__).resolve().parent
    found: dict[str, Any] = {"brama_sql_path": str(package), "commit": None, "modified": None}
    try:
        commit = subprocess.run(
            ["git", "-C", str(package), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(package), "status", "--porcelain", "--", "."],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return found
    found.update(commit=commit, modified=bool(status.strip()))
    return found


def cpu_model() -> str | None:
    """The CPU's model name from ``/proc/cpuinfo`` (``None`` where there is none)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def write(document: dict[str, Any], path: Path) -> None:
    """Write the JSON document (its directory created if needed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


def dialect_name(dialect: str, servers: dict[str, str]) -> str:
    """How a dialect is named in the tables: MariaDB when the server says so."""
    if dialect == "mysql" and "mariadb" in servers.get(dialect, "").lower():
        return "MariaDB"
    return DIALECT_NAMES.get(dialect, dialect)


def rate(value: float) -> str:
    """Calls per second for a table: whole numbers, one decimal below 100."""
    return f"{value:,.1f}" if value < 100 else f"{value:,.0f}"


def label(operation: str, document: dict[str, Any]) -> str:
    """An operation's name in the tables, with the run's sizes."""
    plan = document["plan"]
    if operation == STATUS:
        return f"status() ({plan['status_events']:,} events)"
    if operation == CONNECTIONS:
        return f"connections() ({plan['fleet']:,})"
    return LABELS[operation]


def _median(result: dict[str, Any], contender: str) -> float | None:
    figures = result["contenders"].get(contender)
    return None if figures is None else float(figures["median_ops_per_s"])


def _ratio(result: dict[str, Any], contender: str, mine: str = BRAMA) -> str:
    value = result["ratios"].get(f"{mine}/{contender}")
    return "-" if value is None else f"{value:.2f}"


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def summary(document: dict[str, Any]) -> str:
    """The issue's table: each operation from 1 process on the hot connection (the fleet for
    ``connections()``), brama / Core / driver in ops/s and brama's ratios, per dialect."""
    servers = document["servers"]
    dialects = [d for d in document["plan"]["dialects"] if d not in document["skipped_dialects"]]
    found = {
        (r["dialect"], r["operation"]): r
        for r in document["results"]
        if r["processes"] == 1 and r["layout"] in (HOT, FLEET)
    }
    headers = ["op, 1 process, hot"]
    for dialect in dialects:
        name = dialect_name(dialect, servers)
        headers += [f"{name} brama / Core / driver (ops/s)", f"{name} brama/Core, brama/driver"]
    rows = []
    peer: list[str] = ["guarded call: pybreaker + Redis"]
    fast: list[str] = ["guarded call: brama fast modes (cache 0.5 s, batches 0.1 s)"]
    for operation in OPERATIONS:
        row = [label(operation, document)]
        for dialect in dialects:
            result = found.get((dialect, operation))
            if result is None:
                row += ["-", "-"]
                continue
            row.append(" / ".join(_cell(result, name) for name in (BRAMA, CORE, DRIVER)))
            row.append(f"{_ratio(result, CORE)}, {_ratio(result, DRIVER)}")
            if operation == GUARDED:
                peer += [_cell(result, PYBREAKER), f"brama/pybreaker {_ratio(result, PYBREAKER)}"]
                fast += [
                    _cell(result, FAST),
                    f"fast/pybreaker {_ratio(result, PYBREAKER, FAST)}",
                ]
        rows.append(row)
    if len(fast) > 1:
        rows.append(fast)
    if len(peer) > 1:
        rows.append(peer)
    return _table(headers, rows)


def _cell(result: dict[str, Any], contender: str) -> str:
    value = _median(result, contender)
    return "-" if value is None else rate(value)


def details(document: dict[str, Any], dialect: str) -> str:
    """Every cell of one dialect: medians in ops/s and brama's ratios."""
    headers = [
        "operation",
        "procs",
        "layout",
        "brama",
        "Core",
        "driver",
        "brama/Core",
        "brama/driver",
        "pybreaker",
        "brama/pybreaker",
        "brama-fast",
        "fast/pybreaker",
    ]
    rows = []
    for result in document["results"]:
        if result["dialect"] != dialect:
            continue
        rows.append(
            [
                label(result["operation"], document),
                str(result["processes"]),
                result["layout"],
                _cell(result, BRAMA),
                _cell(result, CORE),
                _cell(result, DRIVER),
                _ratio(result, CORE),
                _ratio(result, DRIVER),
                _cell(result, PYBREAKER),
                _ratio(result, PYBREAKER),
                _cell(result, FAST),
                _ratio(result, PYBREAKER, FAST),
            ]
        )
    return _table(headers, rows)


def tables(document: dict[str, Any]) -> str:
    """The summary, then each dialect's details, as Markdown."""
    servers = document["servers"]
    parts = ["## Summary", "", summary(document)]
    for dialect in document["plan"]["dialects"]:
        if dialect in document["skipped_dialects"]:
            continue
        version = servers.get(dialect, "")
        parts += [
            "",
            f"## {dialect_name(dialect, servers)} {version}",
            "",
            details(document, dialect),
        ]
    start, end = document.get("load_average_at_start"), document.get("load_average_at_end")
    if start and end:
        parts += ["", f"Load average (1, 5, 15 min) at the start {start}, at the end {end}."]
    for skipped in document["skipped"]:
        parts += ["", f"Skipped {skipped['what']}: {skipped['reason']}"]
    return "\n".join(parts)
