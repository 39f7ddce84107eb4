"""Revision 0006 (transitions by cause): downgrade drops ``brama_connections.transitions``, and
the upgrade fills it for the rows in place from the log (and from pruning checkpoints that
count them), so ``verify`` passes and the counts are those before; on every dialect."""

from __future__ import annotations

from datetime import datetime, timezone

from freezegun import freeze_time
from sqlalchemy import create_engine, inspect, select, update
from sqlalchemy.engine import URL

from brama_sql import Brama
from brama_sql.migration import current, downgrade, head, upgrade
from brama_sql.replay import verify
from brama_sql.schema import connections
from brama_sql.tallies import transition_counts

START = datetime(2031, 6, 1, 8, 0, tzinfo=timezone.utc)


def tallies(url: str) -> dict[str, dict[str, int]]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(connections.c.identifier, connections.c.transitions))
            return {row.identifier: transition_counts(row.transitions) for row in rows}
    finally:
        engine.dispose()


def test_revision_0006_fills_the_transitions_of_rows_in_place(blank_url: URL) -> None:
    engine = create_engine(blank_url)
    url = blank_url.render_as_string(hide_password=False)
    try:
        upgrade(engine)
        brama = Brama(url)
        with freeze_time(START) as clock:
            brama.register("plain", failure_threshold=3)
            brama.failure("plain")
            brama.register("busy", failure_threshold=1, expiry=60)
            brama.failure("busy")
            brama.open("busy")
            brama.register("pruned", failure_threshold=1)
            brama.failure("pruned")
            brama.register("gone")
            brama.unregister("gone")
            brama.register("silent")
            clock.tick(7200)
            brama.close("pruned")
            brama.close("busy")
            assert brama.prune(3600) > 0
        brama.dispose()
        before = tallies(url)
        assert before["busy"] == {
            "report:open": 1,
            "manual_open:open": 1,
            "expiry:half_open": 1,
            "manual_close:closed": 1,
        }
        assert before["silent"] == {}

        downgrade(engine, "0005")
        with engine.connect() as conn:
            assert current(conn) == "0005"
            columns = {c["name"] for c in inspect(conn).get_columns("brama_connections")}
            assert "transitions" not in columns

        upgrade(engine)
        with engine.connect() as conn:
            assert current(conn) == head()
        assert tallies(url) == before, "the log and the checkpoints give the counts back"
        for identifier in ("plain", "busy", "pruned", "silent"):
            verify(engine, identifier)

        # A checkpoint written by an older release counts no transitions: the upgrade counts
        # those still in the log, and verify agrees.
        downgrade(engine, "0005")
        with engine.begin() as conn:
            checkpoint = conn.execute(
                select(connections.c.checkpoint).where(connections.c.identifier == "pruned")
            ).scalar_one()
            assert checkpoint is not None
            del checkpoint["tally"]["transitions"]
            conn.execute(
                update(connections)
                .where(connections.c.identifier == "pruned")
                .values(checkpoint=checkpoint)
            )
        upgrade(engine)
        assert tallies(url)["pruned"] == {"manual_close:closed": 1}
        verify(engine, "pruned")
    finally:
        engine.dispose()
