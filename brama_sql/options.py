"""A connection's options: what it is registered, declared or configured with, in the JSON form
the log records, and what differs between two sets of them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from brama_sql.circuit import POLICY_DEFAULTS, Settings

Changes = dict[str, dict[str, Any]]
"""``{"old": {name: value}, "new": {name: value}}`` for the options that differ."""


@dataclass(frozen=True)
class Registration:
    """Every option of a connection: its state-machine settings and its metadata."""

    metadata: dict[str, Any]
    settings: Settings

    def as_options(self) -> dict[str, Any]:
        """All options as JSON values (durations in seconds)."""
        return {**self.settings.full_options(), "metadata": self.metadata}


def changes(stored: dict[str, Any], wanted: dict[str, Any]) -> Changes:
    """The options of ``wanted`` whose value differs from ``stored``; empty when none does (a
    policy option ``stored`` leaves out has its default)."""

    def old(name: str) -> Any:
        return stored.get(name, POLICY_DEFAULTS.get(name))

    names = [name for name in wanted if old(name) != wanted[name]]
    if not names:
        return {}
    return {
        "old": {name: old(name) for name in names},
        "new": {name: wanted[name] for name in names},
    }


def describe(found: Changes) -> str:
    """``failure_threshold 5 -> 3, expiry 60.0 -> 30.0`` (metadata is named, not printed)."""
    parts = []
    for name, new in found.get("new", {}).items():
        if name == "metadata":
            parts.append("metadata")
        else:
            parts.append(f"{name} {found['old'][name]!r} -> {new!r}")
    return ", ".join(parts)
