"""Fast-path successes racing exclusive writes and frequent folds (``FOLD_GAP`` tiny), threads
each with its own Brama (own pool), with a rate policy on: no count is lost."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from brama_sql import Brama, State, store
from brama_sql.replay import verify


def test_folds_racing_fast_path_successes_lose_no_count(
    make_brama: Callable[..., Brama], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store, "FOLD_GAP", 2)
    first = make_brama()
    first.register(
        "svc", failure_threshold=1000, failure_rate_threshold=0.9, minimum_calls=5, window=600
    )
    first.success("svc")
    workers = [make_brama() for _ in range(4)]
    errors: list[BaseException] = []

    def report(worker: int) -> None:
        try:
            for number in range(60):
                if (worker + number) % 7 == 0:
                    workers[worker].failure("svc")
                else:
                    workers[worker].success("svc")
                if number % 20 == 10:
                    workers[worker].status("svc")
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=report, args=(worker,)) for worker in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    fails = sum(1 for w in range(4) for n in range(60) if (w + n) % 7 == 0)
    status = first.status("svc")
    assert status.state is State.CLOSED
    assert (status.total_successes, status.total_failures) == (241 - fails, fails)
    first.failure("svc")
    status = first.status("svc")
    assert (status.window_calls, status.window_failures) == (242, fails + 1)
    verify(first.engine, "svc")
