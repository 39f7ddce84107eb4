"""The per-connection policy options, as keyword arguments of :class:`~brama_sql.Brama`,
``register``, ``declare``, ``configure``, ``guard`` and ``protect``: the backoff of the open
period (docs/backoff.md) and the failure-rate and slow-call policies (docs/failure-rate.md)."""

from __future__ import annotations

from datetime import timedelta
from typing import Literal, TypedDict


class Policies(TypedDict, total=False):
    """Every policy option; each may be left out (the constructor's value, else its default)."""

    expiry_strategy: Literal["fixed", "exponential"]
    """``"fixed"`` (default): every open period is ``expiry``. ``"exponential"``: each
    re-opening from half-open multiplies the previous open period by ``backoff_factor``."""
    backoff_factor: float
    """The multiplier of the exponential strategy, at least 1 (default 2)."""
    max_expiry: float | timedelta | None
    """The longest open period of the exponential strategy, at least ``expiry``; ``None``
    (default): no cap."""
    failure_rate_threshold: float | None
    """Open when the failure share of the window reaches it (``0 < r <= 1``); ``None``: off."""
    window: float | timedelta | None
    """The span of the rate window in seconds; ``None``: 60."""
    minimum_calls: int | None
    """Reports the window needs before a rate decides (at least 1); ``None``: 10."""
    slow_call_duration: float | timedelta | None
    """A call that took longer is slow; ``None``: no call is slow."""
    slow_call_rate_threshold: float | None
    """Open when the slow share of the window reaches it (``0 < r <= 1``; needs
    ``slow_call_duration``); ``None``: off."""
