"""Prometheus metrics of brama_sql's circuits, for ``prometheus_client`` (extra ``prometheus``).

:class:`BramaCollector` is a custom collector: each scrape reads the circuits once, from the
tallies the rows keep (``Brama.connections()`` and one more read of ``brama_connections``), and
the transitions committed since the previous scrape (a range of the log's primary key), so a
scrape costs the same at a thousand events as at a million. :func:`metrics_exposition` renders
them for a web view (Flask, Django).

Metrics (labels ``identifier`` and ``scope``; the unscoped connection has ``scope=""``):

- ``brama_sql_circuit_state{state}``: 1 for the circuit's current state, 0 for the other three;
- ``brama_sql_successes_total`` / ``brama_sql_failures_total``: reports since registration;
- ``brama_sql_trips_total``: times the circuit opened since registration (by failures or by
  hand), shared by every process;
- ``brama_sql_transitions_total{cause,to_state}``: transitions committed since this collector
  began (its first scrape), by cause, counted by this process;
- ``brama_sql_open_seconds``: seconds the current open episode has lasted (0 unless open);
- ``brama_sql_consecutive_failures``: the failure count the threshold is compared with;
- ``brama_sql_up``: 1 when the scrape could read the database, else 0 (and nothing else).
"""

from __future__ import annotations

import threading
import weakref
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector, CollectorRegistry
from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from brama_sql import validation
from brama_sql.brama import EVERY_SCOPE, Brama
from brama_sql.circuit import Kind, State
from brama_sql.errors import BramaDatabaseError
from brama_sql.records import ConnectionStatus
from brama_sql.schema import connections, events, stored_scope

__all__ = ["OVERLAP", "BramaCollector", "metrics_exposition"]

OVERLAP = 1000
"""How many ids below the newest one seen a scrape reads again: a transaction that took an id
before another's but committed after that one was read is still counted (once), as long as no
more than this many events were logged meanwhile."""

LABELS = ("identifier", "scope")
TransitionKey = tuple[str, str, str, str]
"""(identifier, stored scope, cause, to_state)."""


class BramaCollector(Collector):
    """A ``prometheus_client`` collector of the circuits of ``brama``: register it with
    ``REGISTRY.register(BramaCollector(brama))`` (or a registry of your own).

    ``scope`` limits it to one scope (``None``: the unscoped connections); by default every
    scope. ``namespace`` prefixes every metric name. Thread-safe: concurrent scrapes are
    served one at a time.
    """

    def __init__(
        self, brama: Brama, *, scope: Any = EVERY_SCOPE, namespace: str = "brama_sql"
    ) -> None:
        if scope is not EVERY_SCOPE:
            scope = validation.scope(scope)
        self.brama = brama
        self.scope = scope
        self.namespace = namespace
        self._lock = threading.Lock()
        self._transitions: Counter[TransitionKey] = Counter()
        self._newest: int | None = None
        """The newest event id the previous scrape saw (``None`` before the first)."""
        self._counted: set[int] = set()
        """Ids of transitions counted within :data:`OVERLAP` of ``_newest``."""

    def describe(self) -> Iterable[Metric]:
        """The metric families, without samples (so registering reads nothing)."""
        return list(self._families())

    def collect(self) -> Iterable[Metric]:
        """Read the circuits and the new transitions; one scrape."""
        with self._lock:
            try:
                statuses = self._statuses()
                trips = self._read(self._trips)
                self._read(self._count_transitions)
            except BramaDatabaseError:
                up = GaugeMetricFamily(
                    f"{self.namespace}_up", "Whether the scrape could read the database."
                )
                up.add_metric([], 0)
                return [up]
            return list(self._families(statuses, trips))

    # -- reading ---------------------------------------------------------------------------

    def _statuses(self) -> list[ConnectionStatus]:
        if self.scope is EVERY_SCOPE:
            return self.brama.connections()
        return self.brama.connections(scope=self.scope)

    def _read(self, body: Any) -> Any:
        """Run ``body(conn)`` in one read-only transaction of brama's store (its time bound,
        retries and error translation)."""
        return self.brama._store.run("metrics", body, write=False)

    def _trips(self, conn: Connection) -> dict[tuple[str, str], int]:
        """Times each connection opened since registration (its row's episode counter)."""
        query = select(connections.c.identifier, connections.c.scope, connections.c.episode)
        if self.scope is not EVERY_SCOPE:
            query = query.where(connections.c.scope == stored_scope(self.scope))
        return {(row.identifier, row.scope): int(row.episode) for row in conn.execute(query)}

    def _count_transitions(self, conn: Connection) -> None:
        """Count the transitions logged since the previous scrape (a primary key range)."""
        newest = conn.execute(select(func.max(events.c.id))).scalar_one() or 0
        first = self._newest is None
        lowest = max(0, (newest if self._newest is None else self._newest) - OVERLAP)
        query = select(
            events.c.id, events.c.identifier, events.c.scope, events.c.cause, events.c.to_state
        ).where(
            events.c.id > lowest,
            events.c.id <= newest,
            events.c.kind == Kind.TRANSITION.value,
        )
        if self.scope is not EVERY_SCOPE:
            query = query.where(events.c.scope == stored_scope(self.scope))
        for row in conn.execute(query):
            if row.id in self._counted:
                continue
            self._counted.add(row.id)
            if not first:  # the first scrape only notes what came before the collector
                self._transitions[(row.identifier, row.scope, row.cause or "", row.to_state)] += 1
        self._newest = newest if self._newest is None else max(self._newest, newest)
        floor = self._newest - OVERLAP
        self._counted = {number for number in self._counted if number > floor}

    # -- the metric families ---------------------------------------------------------------

    def _families(
        self,
        statuses: list[ConnectionStatus] | None = None,
        trips: dict[tuple[str, str], int] | None = None,
    ) -> Iterator[Metric]:
        name = self.namespace
        up = GaugeMetricFamily(f"{name}_up", "Whether the scrape could read the database.")
        state = GaugeMetricFamily(
            f"{name}_circuit_state",
            "1 for the circuit's current state, 0 for the others.",
            labels=[*LABELS, "state"],
        )
        successes = CounterMetricFamily(
            f"{name}_successes", "Success reports since registration.", labels=LABELS
        )
        failures = CounterMetricFamily(
            f"{name}_failures", "Failure reports since registration.", labels=LABELS
        )
        opened = CounterMetricFamily(
            f"{name}_trips", "Times the circuit opened since registration.", labels=LABELS
        )
        transitions = CounterMetricFamily(
            f"{name}_transitions",
            "State transitions committed since this process's collector began, by cause.",
            labels=[*LABELS, "cause", "to_state"],
        )
        open_seconds = GaugeMetricFamily(
            f"{name}_open_seconds",
            "Seconds the current open episode has lasted (0 unless open).",
            labels=LABELS,
        )
        consecutive = GaugeMetricFamily(
            f"{name}_consecutive_failures",
            "Consecutive failures, compared with the failure threshold.",
            labels=LABELS,
        )
        if statuses is not None:
            up.add_metric([], 1)
            for item in statuses:
                labels = [item.identifier, stored_scope(item.scope)]
                for member in State:
                    state.add_metric([*labels, member.value], 1 if item.state is member else 0)
                successes.add_metric(labels, item.total_successes)
                failures.add_metric(labels, item.total_failures)
                count = (trips or {}).get((item.identifier, stored_scope(item.scope)), 0)
                opened.add_metric(labels, count)
                refusing = item.state in (State.OPEN, State.FORCED_OPEN)
                seconds = item.time_since_state_change if refusing else 0.0
                open_seconds.add_metric(labels, seconds)
                consecutive.add_metric(labels, item.failure_count)
            for (identifier, scope, cause, to_state), value in sorted(self._transitions.items()):
                transitions.add_metric([identifier, scope, cause, to_state], value)
        yield from (up, state, successes, failures, opened, transitions, open_seconds, consecutive)


_registries: weakref.WeakKeyDictionary[Brama, dict[object, CollectorRegistry]] = (
    weakref.WeakKeyDictionary()
)
_registries_lock = threading.Lock()


def metrics_exposition(brama: Brama, *, scope: Any = EVERY_SCOPE) -> tuple[bytes, str]:
    """The metrics of ``brama``'s circuits in Prometheus' text format: ``(body, content
    type)``, for a web view to return as they are.

    Each ``(brama, scope)`` keeps one :class:`BramaCollector` in a registry of its own for the
    life of ``brama`` (so the transition counters go on from scrape to scrape); other metrics
    of the process are not included.
    """
    key: object = scope if scope is EVERY_SCOPE else validation.scope(scope)
    with _registries_lock:
        per_scope = _registries.setdefault(brama, {})
        registry = per_scope.get(key)
        if registry is None:
            registry = CollectorRegistry(auto_describe=True)
            registry.register(BramaCollector(brama, scope=scope))
            per_scope[key] = registry
    return generate_latest(registry), CONTENT_TYPE_LATEST
