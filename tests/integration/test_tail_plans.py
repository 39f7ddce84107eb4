"""PostgreSQL's plan of a status read's tail (events after ``tallied_through``): it must stay a
range of the connection's own events, whatever other connections logged since."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text

from brama_sql import Brama
from brama_sql.rows import STATUS

pytestmark = pytest.mark.parametrize("dialect", ["postgresql"], indirect=True)

BUSY_EVENTS = 30_000


def _buffers(plan: dict[str, Any]) -> int:
    return int(plan["Shared Hit Blocks"]) + int(plan["Shared Read Blocks"])


@pytest.mark.xfail(
    strict=True,
    reason="with few connections PostgreSQL ranges the tail subquery over the primary key "
    "(id > tallied_through, filtered on connection_id): a quiet connection's status reads "
    "every event the busy ones logged since its last exclusive write",
)
def test_a_quiet_connections_status_does_not_read_a_busy_ones_log(brama: Brama) -> None:
    brama.register("quiet")
    brama.failure("quiet")  # its tallied_through: before the busy log
    brama.register("busy")
    brama.success("busy")
    with brama.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO brama_events (connection_id, identifier, scope, kind, occurred_at, "
                "failure_count, probe, actor) SELECT connection_id, identifier, scope, kind, "
                "occurred_at, 0, false, actor FROM brama_events, generate_series(1, :n) "
                "WHERE identifier = 'busy' AND kind = 'success'"
            ),
            {"n": BUSY_EVENTS},
        )
        conn.execute(
            text(
                "UPDATE brama_connections SET successes = successes + :n, tallied_through = "
                "(SELECT max(id) FROM brama_events) WHERE identifier = 'busy'"
            ),
            {"n": BUSY_EVENTS},
        )
    with brama.engine.connect() as conn:
        conn.execute(text("ANALYZE brama_events"))
        conn.execute(text("ANALYZE brama_connections"))
        conn.commit()
        compiled = STATUS.compiled(conn.dialect, frozenset({"identifier", "scope"}))
        arguments = compiled.arguments({"identifier": "quiet", "scope": ""})
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + compiled.sql, arguments)
        ((explained,),) = cursor.fetchall()
    assert brama.status("quiet").total_failures == 1
    assert _buffers(explained[0]["Plan"]) < 100, explained
