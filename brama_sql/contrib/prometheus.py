"""Prometheus metrics of brama_sql's circuits, for ``prometheus_client`` (extra ``prometheus``).

:class:`BramaCollector` is a custom collector: each scrape reads the circuits once, from the
tallies the rows keep (``Brama.connections()`` and one more read of ``brama_connections``), never
the log, so a scrape costs the same at a thousand events as at a million and every process
reports the same counts. :func:`metrics_exposition` renders
them for a web view (Flask, Django).

Metrics (labels ``identifier`` and ``scope``; the unscoped connection has ``scope=""``):

- ``brama_sql_circuit_state{state}``: 1 for the circuit's current state, 0 for the other three;
- ``brama_sql_successes_total`` / ``brama_sql_failures_total``: reports since registration;
- ``brama_sql_trips_total``: times the circuit opened since registration (by failures or by
  hand), shared by every process;
- ``brama_sql_transitions_total{cause,to_state}``: transitions since registration by cause and
  target state (the row's ``transitions`` tally), exact and shared by every process;
- ``brama_sql_open_seconds``: seconds the current open episode has lasted (0 unless open);
- ``brama_sql_consecutive_failures``: the failure count the threshold is compared with;
- ``brama_sql_up``: 1 when the scrape could read the database, else 0 (and nothing else).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector, CollectorRegistry
from sqlalchemy import select
from sqlalchemy.engine import Connection

from brama_sql import validation
from brama_sql.brama import EVERY_SCOPE, Brama
from brama_sql.circuit import State
from brama_sql.errors import BramaDatabaseError
from brama_sql.records import ConnectionStatus
from brama_sql.schema import connections, stored_scope
from brama_sql.tallies import transition_counts

__all__ = ["BramaCollector", "metrics_exposition"]

LABELS = ("identifier", "scope")
Counts = dict[tuple[str, str], tuple[int, dict[str, int]]]
"""Per (identifier, stored scope): times opened (episode) and transitions by cause key."""


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

    def describe(self) -> Iterable[Metric]:
        """The metric families, without samples (so registering reads nothing)."""
        return list(self._families())

    def collect(self) -> Iterable[Metric]:
        """Read the circuits and their counters; one scrape."""
        with self._lock:
            try:
                statuses = self._statuses()
                counts = self._read(self._counts)
            except BramaDatabaseError:
                up = GaugeMetricFamily(
                    f"{self.namespace}_up", "Whether the scrape could read the database."
                )
                up.add_metric([], 0)
                return [up]
            return list(self._families(statuses, counts))

    # -- reading ---------------------------------------------------------------------------

    def _statuses(self) -> list[ConnectionStatus]:
        if self.scope is EVERY_SCOPE:
            return self.brama.connections()
        return self.brama.connections(scope=self.scope)

    def _read(self, body: Any) -> Any:
        """Run ``body(conn)`` in one read-only transaction of brama's store (its time bound,
        retries and error translation)."""
        return self.brama._store.run("metrics", body, write=False)

    def _counts(self, conn: Connection) -> Counts:
        """Times each connection opened since registration (its row's episode counter) and its
        transitions by cause (its row's ``transitions`` tally); one read of the rows."""
        query = select(
            connections.c.identifier,
            connections.c.scope,
            connections.c.episode,
            connections.c.transitions,
        )
        if self.scope is not EVERY_SCOPE:
            query = query.where(connections.c.scope == stored_scope(self.scope))
        return {
            (row.identifier, row.scope): (
                int(row.episode),
                transition_counts(row.transitions),
            )
            for row in conn.execute(query)
        }

    # -- the metric families ---------------------------------------------------------------

    def _families(
        self,
        statuses: list[ConnectionStatus] | None = None,
        counts: Counts | None = None,
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
            "State transitions since registration, by cause and target state.",
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
                key = (item.identifier, stored_scope(item.scope))
                trips, by_cause = (counts or {}).get(key, (0, {}))
                opened.add_metric(labels, trips)
                for cause_key, value in sorted(by_cause.items()):
                    cause, _, to_state = cause_key.partition(":")
                    transitions.add_metric([*labels, cause, to_state], value)
                refusing = item.state in (State.OPEN, State.FORCED_OPEN)
                seconds = item.time_since_state_change if refusing else 0.0
                open_seconds.add_metric(labels, seconds)
                consecutive.add_metric(labels, item.failure_count)
        yield from (up, state, successes, failures, opened, transitions, open_seconds, consecutive)


_registries: weakref.WeakKeyDictionary[Brama, dict[object, CollectorRegistry]] = (
    weakref.WeakKeyDictionary()
)
_registries_lock = threading.Lock()


def metrics_exposition(brama: Brama, *, scope: Any = EVERY_SCOPE) -> tuple[bytes, str]:
    """The metrics of ``brama``'s circuits in Prometheus' text format: ``(body, content
    type)``, for a web view to return as they are.

    Each ``(brama, scope)`` keeps one :class:`BramaCollector` in a registry of its own for the
    life of ``brama``; other metrics of the process are not included.
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
