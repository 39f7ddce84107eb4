"""The JSON columns that may be absent (a row's rate window, its transition counts, its
pruning checkpoint; an event's details) store Python's ``None`` as SQL ``NULL``, which reads
cost nothing to parse; the JSON document ``null`` that rows written before held reads back as
``None`` all the same."""

from __future__ import annotations

from sqlalchemy import func, select

from brama_sql import Brama
from brama_sql.schema import connections, events


def test_an_absent_document_is_stored_as_sql_null(brama: Brama) -> None:
    brama.register("svc")
    brama.success("svc")
    brama.failure("svc")
    with brama.engine.connect() as conn:
        row = conn.execute(
            select(
                connections.c.window_counts.is_(None).label("no_window"),
                connections.c.checkpoint.is_(None).label("no_checkpoint"),
            ).where(connections.c.identifier == "svc")
        ).one()
        details = conn.execute(
            select(events.c.kind, events.c.details.is_(None)).order_by(events.c.id)
        ).all()
    assert row.no_window and row.no_checkpoint
    assert details[0] == ("registered", False)  # its settings
    assert len(details) > 2
    assert all(absent for _, absent in details[1:]), details


def test_a_stored_null_document_reads_as_none(brama: Brama) -> None:
    brama.register("svc", metadata={"team": "pay"})
    brama.success("svc")
    # What rows written before held: the JSON document null (JSON's none_as_null=False).
    null = "'null'::jsonb" if brama.engine.dialect.name == "postgresql" else "'null'"
    with brama.engine.begin() as conn:
        conn.exec_driver_sql(f"UPDATE brama_connections SET window_counts = {null}")
        conn.exec_driver_sql(f"UPDATE brama_events SET details = {null} WHERE kind <> 'registered'")
        stored = conn.execute(
            select(connections.c.window_counts.is_(None), func.count()).group_by(
                connections.c.window_counts.is_(None)
            )
        ).all()
    assert [tuple(row) for row in stored] == [(False, 1)], "a JSON null document, not NULL"
    status = brama.status("svc")
    assert status.metadata == {"team": "pay"}
    assert (status.total_successes, status.window_calls) == (1, 0)
    assert [event.details for event in brama.events("svc")][1:] == [None, None]
    assert [listed.identifier for listed in brama.connections()] == ["svc"]
    brama.failure("svc")
    assert brama.status("svc").failure_count == 1
