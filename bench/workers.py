"""The processes that make the calls. Each run of a dialect starts a pool of 1 or 4 worker
processes (``spawn``), each of which builds every contender once; the parent then sends them
one task at a time (a contender, an operation, a layout, a duration and a start instant), they
run it together and report how many calls they finished and in how long.

Setup (engines, connections, imports) is never timed: only the loop of calls is.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import time
import traceback
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection

from bench.contenders import Contender, WorkerSpec, build
from bench.fleet import targets

START_DELAY_S = 0.01
"""How far ahead of sending a task its start instant lies, so that every worker has it before
it begins (the workers share the system's monotonic clock)."""
READY_TIMEOUT_S = 120.0
"""How long a worker may take to start and build its contenders."""
TASK_GRACE_S = 300.0
"""How long past a task's duration the parent waits for its reply (one slow call may run on)."""


@dataclass(frozen=True)
class Task:
    """Run one contender's operation in a layout for ``seconds`` from ``start_at``
    (:func:`time.monotonic`)."""

    contender: str
    operation: str
    layout: str
    seconds: float
    start_at: float = 0.0


@dataclass(frozen=True)
class Sample:
    """What one worker did in one task: ``calls`` finished in ``seconds``."""

    calls: int
    seconds: float

    @property
    def rate(self) -> float:
        """Calls per second."""
        return self.calls / self.seconds


@dataclass(frozen=True)
class Failure:
    """A worker's exception, with its traceback as text."""

    text: str


class WorkerError(Exception):
    """A worker failed to start or to run a task."""


def serve(index: int, count: int, spec: WorkerSpec, pipe: Connection) -> None:
    """A worker process's main loop: build the contenders, then run tasks until ``None``."""
    try:
        built = {name: build(name, spec) for name in spec.contenders}
    except BaseException:
        pipe.send(Failure(traceback.format_exc()))
        return
    pipe.send("ready")
    positions: dict[tuple[str, str, str], int] = {}
    try:
        while True:
            task = pipe.recv()
            if task is None:
                break
            try:
                pipe.send(_run(task, built, spec, index, count, positions))
            except Exception:
                pipe.send(Failure(traceback.format_exc()))
    finally:
        for contender in built.values():
            with contextlib.suppress(Exception):  # closing at exit: the figures are sent
                contender.close()


def _run(
    task: Task,
    built: dict[str, Contender],
    spec: WorkerSpec,
    index: int,
    count: int,
    positions: dict[tuple[str, str, str], int],
) -> Sample:
    """Call the operation in a loop from ``task.start_at`` until its duration has passed
    (at least once), going round the layout's connections from this worker's own offset."""
    contender = built[task.contender]
    operation = contender.operations[task.operation]
    names = targets(spec.plan, task.operation, task.layout) or [""]
    key = (task.contender, task.operation, task.layout)
    position = positions.get(key, index * len(names) // count)
    delay = task.start_at - time.monotonic()
    if delay > 0:
        time.sleep(delay)
    deadline = task.start_at + task.seconds
    calls = 0
    began = time.perf_counter()
    while True:
        operation(names[position % len(names)])
        position += 1
        calls += 1
        if time.monotonic() >= deadline:
            break
    contender.settle()
    elapsed = time.perf_counter() - began
    positions[key] = position
    return Sample(calls, elapsed)


class Workers:
    """A pool of ``count`` worker processes for one database."""

    def __init__(self, count: int, spec: WorkerSpec) -> None:
        context = multiprocessing.get_context("spawn")
        self.pipes: list[Connection] = []
        self.processes: list[multiprocessing.process.BaseProcess] = []
        for index in range(count):
            parent, child = context.Pipe()
            process = context.Process(
                target=serve, args=(index, count, spec, child), name=f"bench-worker-{index}"
            )
            process.start()
            child.close()
            self.pipes.append(parent)
            self.processes.append(process)
        try:
            for pipe in self.pipes:
                self._receive(pipe, READY_TIMEOUT_S, "start")
        except BaseException:
            self.close()
            raise

    def run(self, task: Task) -> list[Sample]:
        """Run ``task`` on every worker at once; one sample per worker."""
        started = replace(task, start_at=time.monotonic() + START_DELAY_S)
        for pipe in self.pipes:
            pipe.send(started)
        samples = []
        for pipe in self.pipes:
            reply = self._receive(pipe, task.seconds + TASK_GRACE_S, "run a task")
            if not isinstance(reply, Sample):
                raise WorkerError(f"a worker answered {reply!r}")
            samples.append(reply)
        return samples

    @staticmethod
    def _receive(pipe: Connection, timeout: float, what: str) -> object:
        if not pipe.poll(timeout):
            raise WorkerError(f"a worker did not {what} within {timeout:.0f} s")
        reply = pipe.recv()
        if isinstance(reply, Failure):
            raise WorkerError(f"a worker failed to {what}:\n{reply.text}")
        return reply

    def close(self) -> None:
        """Stop the workers (each closes its contenders) and wait for them."""
        for pipe in self.pipes:
            with contextlib.suppress(OSError):
                pipe.send(None)
        for process in self.processes:
            process.join(30)
            if process.is_alive():
                process.terminate()
                process.join(5)
        for pipe in self.pipes:
            pipe.close()

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
