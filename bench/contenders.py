"""The contenders as a worker process builds them: each one's call for every operation it does.

- ``brama``: a :class:`~brama_sql.Brama` on the run's URL with default options (its own engine:
  WAL and ``synchronous=FULL`` on SQLite, the per-dialect session settings).
- ``core`` and ``driver``: the hand-written twins of :mod:`bench.twins`.
- ``brama-fast``: a :class:`~brama_sql.Brama` with both opt-in fast modes, an availability
  cache of 0.5 s and batched reporting of 0.1 s (docs/fast-modes.md), for the guarded call.
- ``pybreaker``: a ``pybreaker.CircuitBreaker`` per connection whose state lives in Redis
  (``CircuitRedisStorage``), the peer of a guarded call; it keeps nothing durable and logs
  nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import make_url

from bench.fleet import EXPIRY_S, SCOPE
from bench.plan import (
    AVAILABLE,
    BRAMA,
    CONNECTIONS,
    CORE,
    DRIVER,
    FAILURE,
    FAST,
    GUARDED,
    PYBREAKER,
    STATUS,
    SUCCESS,
    Plan,
)
from bench.twins import CoreTwin, DriverTwin, Twin
from brama_sql import Brama
from brama_sql.validation import MAX_THRESHOLD

FAST_CACHE_S = 0.5
"""The availability cache of the fast contender: other processes' trips show up to this late."""
FAST_BATCH_S = 0.1
"""The batched reporting of the fast contender: successes written up to this late."""
Operation = Callable[[str], object]
"""One call of an operation on the connection named (``connections()`` ignores the name)."""


class Refused(Exception):
    """A guarded call found its circuit open: the benchmark never opens one."""


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker process needs to build its contenders (picklable)."""

    dialect: str
    url: str
    plan: Plan
    contenders: tuple[str, ...]
    redis_url: str | None = None
    namespace: str = "brama-bench"
    """The prefix of pybreaker's Redis keys for this run."""


@dataclass
class Contender:
    """A built contender: its operations and how to release what it holds."""

    operations: dict[str, Operation]
    close: Callable[[], None]
    settle: Callable[[], None] = lambda: None
    """Write what the contender still holds back (the fast contender's batched reports): the
    end of each of its rounds, timed with it, so that its deferred work neither goes uncounted
    nor spills into the next contender's round."""


def build(name: str, spec: WorkerSpec) -> Contender:
    """Build the contender ``name`` for a worker."""
    url = make_url(spec.url)
    if name == BRAMA:
        return _brama(Brama(url))
    if name == FAST:
        fast = Brama(url, availability_cache=FAST_CACHE_S, batch_reports=FAST_BATCH_S)
        contender = _brama(fast)
        contender.settle = fast.flush
        return contender
    if name in (CORE, DRIVER):
        return _twin(CoreTwin(url) if name == CORE else DriverTwin(url))
    if name == PYBREAKER:
        assert spec.redis_url is not None
        peer = PybreakerPeer(spec.redis_url, spec.namespace)
        return Contender({GUARDED: peer.guarded}, peer.close)
    raise ValueError(f"unknown contender {name!r}")


def _brama(brama: Brama) -> Contender:
    def guarded(identifier: str) -> None:
        if not brama.available(identifier, scope=SCOPE):
            raise Refused(identifier)
        brama.success(identifier, scope=SCOPE)

    return Contender(
        {
            AVAILABLE: lambda identifier: brama.available(identifier, scope=SCOPE),
            SUCCESS: lambda identifier: brama.success(identifier, scope=SCOPE),
            FAILURE: lambda identifier: brama.failure(identifier, scope=SCOPE, reason="bench"),
            STATUS: lambda identifier: brama.status(identifier, scope=SCOPE),
            GUARDED: guarded,
            CONNECTIONS: lambda _identifier: brama.connections(),
        },
        brama.dispose,
    )


def _twin(twin: Twin) -> Contender:
    def guarded(identifier: str) -> None:
        if not twin.available(identifier):
            raise Refused(identifier)
        twin.success(identifier)

    return Contender(
        {
            AVAILABLE: twin.available,
            SUCCESS: twin.success,
            FAILURE: twin.failure,
            STATUS: twin.status,
            GUARDED: guarded,
            CONNECTIONS: lambda _identifier: twin.connections(),
        },
        twin.close,
    )


def _dependency() -> None:
    """The guarded call itself: nothing, so that only the breaker's cost is measured."""


class PybreakerPeer:
    """pybreaker with its Redis storage: one breaker per connection, created on first use,
    in the namespace ``<namespace>:<identifier>`` (shared by every process of the run)."""

    def __init__(self, redis_url: str, namespace: str) -> None:
        import redis

        self.redis = redis.Redis.from_url(redis_url)
        self.namespace = namespace
        self.breakers: dict[str, Any] = {}

    def guarded(self, identifier: str) -> None:
        breaker = self.breakers.get(identifier)
        if breaker is None:
            breaker = self.breakers[identifier] = self._breaker(identifier)
        breaker.call(_dependency)

    def _breaker(self, identifier: str) -> Any:
        import pybreaker

        storage = pybreaker.CircuitRedisStorage(
            pybreaker.STATE_CLOSED, self.redis, namespace=f"{self.namespace}:{identifier}"
        )
        return pybreaker.CircuitBreaker(
            fail_max=MAX_THRESHOLD,
            reset_timeout=EXPIRY_S,
            state_storage=storage,
            name=identifier,
        )

    def close(self) -> None:
        self.redis.close()
