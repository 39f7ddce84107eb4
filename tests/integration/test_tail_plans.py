"""PostgreSQL's plans of the reads of a connection's tail (its events after ``tallied_through``):
each must stay a range of the connection's own events from ``tallied_through``, whatever other
connections logged since and however long its own log, in custom and generic plans alike
(psycopg prepares a statement on its sixth execution, and PostgreSQL may then keep a generic
plan). See :mod:`brama_sql.log_ranges`."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import pytest
from psycopg import sql
from sqlalchemy import text

from brama_sql import Brama
from brama_sql.prepared import Prepared, execute
from brama_sql.rows import FIND, STATUS, Identity
from brama_sql.store import SAVE_ROW_FOLDING, TAIL, TAIL_FOLDED, TAIL_REPORTS, idle_since
from brama_sql.tallies import Tally

pytestmark = pytest.mark.parametrize("dialect", ["postgresql"], indirect=True)

BUSY_EVENTS = 30_000
BUSY_TAIL = 3
BUFFERS = 50
"""At most this many shared buffers per read: a tail of a few events and the row take fewer
than 20; reading the events logged since by the busy connection took 969, reading the busy
connection's whole log through ``(connection_id, occurred_at)`` took hundreds."""


def _seed(brama: Brama) -> None:
    """``quiet``: one failure, its tallies ending before ``busy``'s log; ``busy``: a log of
    ``BUSY_EVENTS`` successes counted in its tallies, then a tail of ``BUSY_TAIL`` healthy
    successes not folded yet. Statistics analyzed, as autovacuum would."""
    brama.register("quiet")
    brama.failure("quiet")
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
    for _ in range(BUSY_TAIL):
        brama.success("busy")  # healthy: appended under the shared lock, not folded
    with brama.engine.connect() as conn:
        conn.execute(text("ANALYZE brama_events"))
        conn.execute(text("ANALYZE brama_connections"))
        conn.commit()


def _explain(
    brama: Brama, statement: Prepared, parameters: Mapping[str, Any], plan: str = "custom"
) -> dict[str, Any]:
    """The top node of ``EXPLAIN (ANALYZE, BUFFERS)`` of ``statement`` run with ``parameters``
    as a prepared statement whose plan is ``plan`` (``custom`` or ``generic``), in a
    transaction rolled back after."""
    with brama.engine.connect() as conn:
        compiled = statement.compiled(conn.dialect, frozenset(parameters))
        arguments = compiled.arguments(parameters)
        names = list(arguments)
        numbered = re.sub(
            r"%\((\w+)\)s", lambda found: f"${names.index(found.group(1)) + 1}", compiled.sql
        )
        dbapi_connection = conn.connection.dbapi_connection
        assert dbapi_connection is not None
        values = sql.SQL(", ").join(sql.Literal(arguments[name]) for name in names)
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"SET LOCAL plan_cache_mode = force_{plan}_plan")
            cursor.execute(f"PREPARE tail_plan AS {numbered}")
            cursor.execute(
                sql.SQL("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) EXECUTE tail_plan({})").format(
                    values
                )
            )
            ((explained,),) = cursor.fetchall()
        finally:
            dbapi_connection.rollback()
            cursor.execute("DEALLOCATE ALL")
            cursor.close()
    node: dict[str, Any] = explained[0]["Plan"]
    return node


def _buffers(node: dict[str, Any]) -> int:
    return int(node["Shared Hit Blocks"]) + int(node["Shared Read Blocks"])


def _event_buffers(node: dict[str, Any]) -> int:
    """The buffers read by the plan's scans of ``brama_events`` (a bitmap heap scan's with its
    index's)."""
    own = _buffers(node) if node.get("Relation Name") == "brama_events" else 0
    return own + sum(_event_buffers(child) for child in node.get("Plans", []))


def _row(brama: Brama, identifier: str) -> Any:
    with brama.engine.connect() as conn:
        return execute(conn, FIND, Identity(identifier, None).parameters()).one()


def _folding(row: Any) -> dict[str, Any]:
    """The parameters of an exclusive write of ``row`` folding its tail
    (``SAVE_ROW_FOLDING``), its circuit unchanged, as ``store._save`` gives them."""
    values = {
        "row_id": row.id,
        "state": row.state,
        "failure_count": row.failure_count,
        "opened_at": row.opened_at,
        "episode": row.episode,
        "open_period": row.open_period,
        "window_counts": row.window_counts,
    }
    own = Tally.of_row(row).columns()
    for name in TAIL_FOLDED:
        values[f"own_{name}"] = own.pop(name)
    values.update(own, through=row.tallied_through, call_id=0)
    return values


def test_a_quiet_connections_status_does_not_read_a_busy_ones_log(brama: Brama) -> None:
    _seed(brama)
    node = _explain(brama, STATUS, {"identifier": "quiet", "scope": ""})
    assert brama.status("quiet").total_failures == 1
    assert _buffers(node) < BUFFERS, node


def test_a_busy_connections_status_reads_its_tail_not_its_log(brama: Brama) -> None:
    _seed(brama)
    node = _explain(brama, STATUS, {"identifier": "busy", "scope": ""})
    assert brama.status("busy").total_successes == 1 + BUSY_EVENTS + BUSY_TAIL
    assert _buffers(node) < BUFFERS, node


@pytest.mark.parametrize("plan", ["custom", "generic"])
def test_every_tail_read_ranges_over_the_connections_own_tail(brama: Brama, plan: str) -> None:
    _seed(brama)
    read: dict[str, int] = {}
    for identifier in ("quiet", "busy"):
        row = _row(brama, identifier)
        tail = {"row_id": row.id, "through": row.tallied_through}
        statements: dict[str, tuple[Prepared, Mapping[str, Any]]] = {
            "STATUS": (STATUS, {"identifier": identifier, "scope": ""}),
            "TAIL": (TAIL, tail),
            "TAIL_REPORTS": (TAIL_REPORTS, tail),
            "SAVE_ROW_FOLDING": (SAVE_ROW_FOLDING, _folding(row)),
        }
        for name, (statement, parameters) in statements.items():
            node = _explain(brama, statement, parameters, plan)
            read[f"{name} {identifier}"] = _buffers(node)
        if identifier == "busy":
            with brama.engine.connect() as conn:
                count, _latest = execute(conn, TAIL, tail).one()
            assert count == BUSY_TAIL
    assert max(read.values()) < BUFFERS, f"shared buffers read: {read}"


def test_cleanup_reads_the_tails_of_its_candidates_not_the_log_since(brama: Brama) -> None:
    _seed(brama)
    quiet = _row(brama, "quiet")
    cutoff = quiet.last_event_at + timedelta(microseconds=1)  # busy's whole log is later
    with brama.engine.connect() as conn:
        query = idle_since(cutoff).compile(conn, compile_kwargs={"literal_binds": True})
        explained = conn.execute(text(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {query}"))
        node = explained.scalar_one()[0]["Plan"]
        candidates = [identifier for identifier, _scope in conn.execute(idle_since(cutoff))]
    assert candidates == ["quiet"]
    # cleanup() scans every row of brama_connections (and, after other tests, their dead
    # versions): only what it reads of the log is bounded here
    assert _event_buffers(node) < BUFFERS, node
