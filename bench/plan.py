"""What a run measures: the operations, the layouts, the contenders, and how long each round is.

A *cell* is one operation on one dialect, from one number of processes, in one layout; its
contenders alternate in rounds (see :mod:`bench.measure`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

DIALECTS = ("sqlite", "postgresql", "mysql")

AVAILABLE = "available"
SUCCESS = "success"
FAILURE = "failure"
STATUS = "status"
GUARDED = "guarded"
CONNECTIONS = "connections"
READS = (AVAILABLE, STATUS, CONNECTIONS)
"""Operations that write nothing: measured first, so that every process count reads the same
data (the writes add events to the hot and spread connections)."""
WRITES = (SUCCESS, FAILURE, GUARDED)
OPERATIONS = (*READS, *WRITES)
LABELS = {
    AVAILABLE: "available()",
    SUCCESS: "success() healthy",
    FAILURE: "failure() (kept closed)",
    STATUS: "status() (1,000 events)",
    GUARDED: "guarded call",
    CONNECTIONS: "connections() (1,000)",
}

HOT = "hot"
SPREAD = "spread"
LAYOUTS = (HOT, SPREAD)
FLEET = "fleet"
"""The layout of ``connections()``, which reads every connection at once."""

BRAMA = "brama"
CORE = "core"
DRIVER = "driver"
PYBREAKER = "pybreaker"
FAST = "brama-fast"
"""brama_sql with both opt-in fast modes (docs/fast-modes.md), for the guarded call only."""
TWINS = (CORE, DRIVER)
CONTENDERS = (BRAMA, CORE, DRIVER, FAST, PYBREAKER)


def contenders_of(operation: str) -> tuple[str, ...]:
    """The contenders of an operation: pybreaker and brama_sql's fast modes only do a guarded
    call."""
    if operation == GUARDED:
        return CONTENDERS
    return (BRAMA, *TWINS)


def layouts_of(operation: str) -> tuple[str, ...]:
    """``connections()`` reads the whole fleet; every other operation runs hot and spread."""
    return (FLEET,) if operation == CONNECTIONS else LAYOUTS


@dataclass(frozen=True)
class Plan:
    """The shape of a run.

    ``spread`` connections take the spread layout's traffic (and as many others hold
    ``status_events`` events each for ``status()``); ``fleet`` is the number of connections in
    the table when ``connections()`` runs. Each contender of a cell runs ``rounds`` rounds of
    ``round_seconds``, after one unrecorded warm-up of ``warmup_seconds``.
    """

    dialects: tuple[str, ...] = DIALECTS
    processes: tuple[int, ...] = (1, 4)
    rounds: int = 5
    round_seconds: float = 0.4
    warmup_seconds: float = 0.05
    spread: int = 100
    status_events: int = 1000
    fleet: int = 1000
    operations: tuple[str, ...] = field(default=OPERATIONS)

    def __post_init__(self) -> None:
        if self.fleet < 1 + 2 * self.spread:
            raise ValueError("fleet must hold the hot, the spread and the status connections")
        if self.status_events < 3:
            raise ValueError("a status connection has at least its first three events")
        if self.rounds < 1 or self.round_seconds <= 0 or self.warmup_seconds < 0:
            raise ValueError("rounds must be at least 1 and last a positive time")
        unknown = set(self.operations) - set(OPERATIONS)
        if unknown:
            raise ValueError(f"unknown operations: {', '.join(sorted(unknown))}")

    def cells(self) -> list[tuple[str, str, int]]:
        """``(operation, layout, processes)`` in the order measured: reads before writes, and
        each process count of a cell one after the other."""
        ordered = [op for op in OPERATIONS if op in self.operations]
        return [
            (operation, layout, processes)
            for operation in ordered
            for layout in layouts_of(operation)
            for processes in self.processes
        ]


FULL = Plan()
SHORT = Plan(
    processes=(1,),
    rounds=2,
    round_seconds=0.03,
    warmup_seconds=0.01,
    spread=10,
    status_events=1000,
    fleet=100,
)
"""The smoke test: tiny rounds, one process, a smaller fleet (still 1,000 events per status
connection). It checks that everything runs, not the figures."""
