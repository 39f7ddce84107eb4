"""``brama_sql.replay.verify``: the log explains the row, checked from one snapshot, for the
latest registration of a connection."""

from __future__ import annotations

import threading
from collections.abc import Callable

from brama_sql import Brama
from brama_sql.replay import verify


def test_verify_agrees_with_itself_during_live_writes(make_brama: Callable[..., Brama]) -> None:
    writer, reader = make_brama(), make_brama()
    writer.register("svc", failure_threshold=1_000_000)

    def write() -> None:
        for _ in range(300):
            writer.failure("svc")

    thread = threading.Thread(target=write)
    thread.start()
    checks = 0
    try:
        while thread.is_alive() and checks < 40:
            verify(reader.engine, "svc")
            status = reader.status("svc")
            assert status.failure_count == status.total_failures, "one snapshot"
            checks += 1
    finally:
        thread.join()
    assert checks > 0
    verify(reader.engine, "svc")


def test_a_re_registration_with_other_options_is_verified_on_its_own(brama: Brama) -> None:
    brama.register("svc", failure_threshold=5)
    brama.failure("svc")
    brama.unregister("svc")
    brama.register("svc", failure_threshold=1)
    brama.failure("svc")
    circuit = verify(brama.engine, "svc")
    assert circuit is not None and circuit.state.value == "open"
