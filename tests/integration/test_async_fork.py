"""``AsyncBrama`` across ``os.fork()``: an object made and used in the parent is used in a forked
child under a new event loop, on connections of the child's own (the engine's pool is renewed at
the fork, as ``Brama``'s is), and the parent goes on using its own; every report is counted
once. Run in a subprocess, so that no event loop of the test runner crosses the fork."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from brama_sql import Brama, Kind
from brama_sql.replay import verify

SCRIPT = """
import asyncio, os, sys
from brama_sql import AsyncBrama

brama = AsyncBrama(sys.argv[1], failure_threshold=100)
loop = asyncio.new_event_loop()
loop.run_until_complete(brama.failure("svc", reason="parent before"))
inherited = brama.engine.sync_engine.pool
assert inherited.checkedin() == 1  # the parent's pooled connection
pid = os.fork()
if pid == 0:
    async def child():
        await brama.failure("svc", reason="child")
        assert brama.engine.sync_engine.pool is not inherited, "the child's own pool"
        await brama.dispose()
    asyncio.run(child())
    os._exit(0)
_, status = os.waitpid(pid, 0)
assert status == 0, status
assert brama.engine.sync_engine.pool is inherited and inherited.checkedin() == 1
loop.run_until_complete(brama.failure("svc", reason="parent after"))
loop.run_until_complete(brama.dispose())
print("done")
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX only")
def test_a_forked_child_uses_connections_of_its_own(async_url: str, brama: Brama) -> None:
    brama.register("svc", failure_threshold=100)
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, async_url], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "done"
    reasons = [event.reason for event in brama.events("svc") if event.kind is Kind.FAILURE]
    assert reasons == ["parent before", "child", "parent after"]
    verify(brama.engine, "svc")
