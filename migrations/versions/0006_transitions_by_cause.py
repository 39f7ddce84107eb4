"""Transitions by cause: ``brama_connections.transitions``.

A tally of each connection's transitions by cause and target state (JSON,
``{"<cause>:<to_state>": count}``), kept like the other tallies by every write under the
exclusive row lock, carried in pruning checkpoints and checked by ``verify``. The Prometheus
collector reads it, so ``brama_sql_transitions_total`` is exact and the same from every
process without counting the log.

The upgrade fills it for the existing rows in one grouped pass over the log: the transitions of
each row's registration still in the log (after ``pruned_through``), plus those its pruning
checkpoint counted, if it counts them (one written by this revision before a downgrade). The
transitions a prune deleted under an older revision are not counted (their checkpoints hold no
such tally either, so ``verify`` agrees). Downgrading drops the column; the checkpoints keep
their counts, which older releases ignore.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

JSON_DOCUMENT = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("brama_connections", schema=None) as batch_op:
        batch_op.add_column(sa.Column("transitions", JSON_DOCUMENT, nullable=True))
    conn = op.get_bind()
    connections = sa.table(
        "brama_connections",
        sa.column("id", sa.Integer()),
        sa.column("pruned_through", sa.BigInteger()),
        sa.column("checkpoint", JSON_DOCUMENT),
        sa.column("transitions", JSON_DOCUMENT),
    )
    events = sa.table(
        "brama_events",
        sa.column("id", sa.BigInteger()),
        sa.column("connection_id", sa.Integer()),
        sa.column("kind", sa.String(16)),
        sa.column("cause", sa.String(16)),
        sa.column("to_state", sa.String(16)),
    )
    counted = (
        sa.select(
            events.c.connection_id,
            events.c.cause,
            events.c.to_state,
            sa.func.count().label("transitions"),
        )
        .select_from(events.join(connections, connections.c.id == events.c.connection_id))
        .where(events.c.kind == "transition", events.c.id > connections.c.pruned_through)
        .group_by(events.c.connection_id, events.c.cause, events.c.to_state)
    )
    tallies: dict[int, dict[str, int]] = {}
    checkpoints = sa.select(connections.c.id, connections.c.checkpoint).where(
        connections.c.checkpoint.is_not(None)
    )
    for row in conn.execute(checkpoints):
        counts = ((row.checkpoint or {}).get("tally") or {}).get("transitions") or {}
        if counts:
            tallies[int(row.id)] = {str(key): int(value) for key, value in counts.items()}
    for row in conn.execute(counted):
        key = f"{row.cause or ''}:{row.to_state or ''}"
        tally = tallies.setdefault(int(row.connection_id), {})
        tally[key] = tally.get(key, 0) + int(row.transitions)
    if tallies:
        conn.execute(
            sa.update(connections)
            .where(connections.c.id == sa.bindparam("row_id"))
            .values(transitions=sa.bindparam("counts", type_=JSON_DOCUMENT)),
            [{"row_id": key, "counts": value} for key, value in tallies.items()],
        )


def downgrade() -> None:
    with op.batch_alter_table("brama_connections", schema=None) as batch_op:
        batch_op.drop_column("transitions")
