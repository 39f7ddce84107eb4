"""Tallies on the connection row, a checkpoint for pruning, hourly rollups of pruned events.

``status()`` and ``connections()`` counted each connection's log on every read, so they grew
with it. The counts and latest times of its reports, transitions and events now live on the
row, up to the event id ``tallied_through``, kept by the writes under the row lock (filled
here from the log, rows kept); healthy successes after it are counted from the log until the
next such write folds them in.
``prune()`` deletes old events: it folds each deleted event into ``brama_rollups`` (per
connection and hour) and records on the row the replay checkpoint after the newest one it
deleted, so that ``verify`` still explains the row. The index that served the counting,
``(connection_id, kind, occurred_at)``, gives way to ``(connection_id, id)``, which reads a
connection's log in order for pruning and verifying.

Downgrading drops the tallies, the checkpoints and the rollups: after a prune, the remaining
log no longer starts at a registration, so ``verify`` of the older release fails on it.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import brama_sql.types

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

JSON_DOCUMENT = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
UTC = brama_sql.types.UTCDateTime(timezone=True)

TALLIES = {
    "successes": "SELECT COUNT(*) FROM brama_events e "
    "WHERE e.connection_id = brama_connections.id AND e.kind = 'success'",
    "failures": "SELECT COUNT(*) FROM brama_events e "
    "WHERE e.connection_id = brama_connections.id AND e.kind = 'failure'",
    "last_success_at": "SELECT MAX(e.occurred_at) FROM brama_events e "
    "WHERE e.connection_id = brama_connections.id AND e.kind = 'success'",
    "last_failure_at": "SELECT MAX(e.occurred_at) FROM brama_events e "
    "WHERE e.connection_id = brama_connections.id AND e.kind = 'failure'",
    "last_transition_at": "SELECT MAX(e.occurred_at) FROM brama_events e "
    "WHERE e.connection_id = brama_connections.id AND e.kind = 'transition'",
    "last_event_at": "SELECT MAX(e.occurred_at) FROM brama_events e "
    "WHERE e.connection_id = brama_connections.id",
    "tallied_through": "SELECT COALESCE(MAX(e.id), 0) FROM brama_events e "
    "WHERE e.connection_id = brama_connections.id",
}
"""Each tally column and the query over the log that fills it for the existing rows."""


def upgrade() -> None:
    op.add_column(
        "brama_connections",
        sa.Column("successes", sa.BigInteger(), server_default="0", nullable=False),
    )
    op.add_column(
        "brama_connections",
        sa.Column("failures", sa.BigInteger(), server_default="0", nullable=False),
    )
    for name in ("last_success_at", "last_failure_at", "last_transition_at", "last_event_at"):
        op.add_column("brama_connections", sa.Column(name, UTC, nullable=True))
    op.add_column(
        "brama_connections",
        sa.Column("tallied_through", sa.BigInteger(), server_default="0", nullable=False),
    )
    op.add_column(
        "brama_connections",
        sa.Column("pruned_through", sa.BigInteger(), server_default="0", nullable=False),
    )
    op.add_column("brama_connections", sa.Column("checkpoint", JSON_DOCUMENT, nullable=True))
    assignments = ", ".join(f"{name} = ({query})" for name, query in TALLIES.items())
    op.execute(f"UPDATE brama_connections SET {assignments}")

    op.create_table(
        "brama_rollups",
        sa.Column("connection_id", sa.Integer(), nullable=False),
        sa.Column("hour", UTC, nullable=False),
        sa.Column("identifier", brama_sql.types.ExactString(length=255), nullable=False),
        sa.Column("scope", brama_sql.types.ExactString(length=255), nullable=False),
        sa.Column("events", sa.BigInteger(), nullable=False),
        sa.Column("successes", sa.BigInteger(), nullable=False),
        sa.Column("failures", sa.BigInteger(), nullable=False),
        sa.Column("transitions", sa.BigInteger(), nullable=False),
        sa.Column("trips", sa.BigInteger(), nullable=False),
        sa.Column("first_event_id", sa.BigInteger(), nullable=False),
        sa.Column("last_event_id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("connection_id", "hour", name=op.f("pk_brama_rollups")),
        mysql_charset="utf8mb4",
    )
    with op.batch_alter_table("brama_rollups", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_brama_rollups_hour"), ["hour"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_brama_rollups_identifier_scope_hour"),
            ["identifier", "scope", "hour"],
            unique=False,
        )

    with op.batch_alter_table("brama_events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_brama_events_connection_id_id"), ["connection_id", "id"], unique=False
        )
        batch_op.drop_index(batch_op.f("ix_brama_events_connection_id_kind_occurred_at"))


def downgrade() -> None:
    with op.batch_alter_table("brama_events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_brama_events_connection_id_kind_occurred_at"),
            ["connection_id", "kind", "occurred_at"],
            unique=False,
        )
        batch_op.drop_index(batch_op.f("ix_brama_events_connection_id_id"))
    with op.batch_alter_table("brama_rollups", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_brama_rollups_identifier_scope_hour"))
        batch_op.drop_index(batch_op.f("ix_brama_rollups_hour"))
    op.drop_table("brama_rollups")
    with op.batch_alter_table("brama_connections", schema=None) as batch_op:
        for name in (
            "checkpoint",
            "pruned_through",
            "tallied_through",
            "last_event_at",
            "last_transition_at",
            "last_failure_at",
            "last_success_at",
            "failures",
            "successes",
        ):
            batch_op.drop_column(name)
