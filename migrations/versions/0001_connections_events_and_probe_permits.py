"""Connections, their append-only event log, and half-open probe permits.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import brama_sql.types

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "brama_connections",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("identifier", brama_sql.types.ExactString(length=255), nullable=False),
        sa.Column("scope", brama_sql.types.ExactString(length=255), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("failure_count", sa.Integer(), nullable=False),
        sa.Column("opened_at", brama_sql.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("failure_threshold", sa.Integer(), nullable=False),
        sa.Column("expiry", sa.Double(), nullable=False),
        sa.Column("half_open_max_calls", sa.Integer(), nullable=True),
        sa.Column("probe_timeout", sa.Double(), nullable=True),
        sa.Column("episode", sa.Integer(), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("registered_at", brama_sql.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_brama_connections")),
        sa.UniqueConstraint(
            "identifier", "scope", name=op.f("uq_brama_connections_identifier_scope")
        ),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "brama_events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("connection_id", sa.Integer(), nullable=False),
        sa.Column("identifier", brama_sql.types.ExactString(length=255), nullable=False),
        sa.Column("scope", brama_sql.types.ExactString(length=255), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("occurred_at", brama_sql.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("from_state", sa.String(length=16), nullable=True),
        sa.Column("to_state", sa.String(length=16), nullable=True),
        sa.Column("reason", sa.String(length=1024), nullable=True),
        sa.Column("failure_count", sa.Integer(), nullable=False),
        sa.Column("cause", sa.String(length=16), nullable=True),
        sa.Column("probe", sa.Boolean(), nullable=False),
        sa.Column("actor", sa.String(length=255), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_brama_events")),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("brama_events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_brama_events_connection_id_kind_occurred_at"),
            ["connection_id", "kind", "occurred_at"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_brama_events_connection_id_occurred_at"),
            ["connection_id", "occurred_at"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_brama_events_identifier_scope_id"),
            ["identifier", "scope", "id"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_brama_events_occurred_at"), ["occurred_at"], unique=False
        )

    op.create_table(
        "brama_permits",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("connection_id", sa.Integer(), nullable=False),
        sa.Column("episode", sa.Integer(), nullable=False),
        sa.Column("holder", sa.String(length=255), nullable=False),
        sa.Column("claimed_at", brama_sql.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", brama_sql.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_brama_permits")),
    )
    with op.batch_alter_table("brama_permits", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_brama_permits_connection_id_episode_expires_at"),
            ["connection_id", "episode", "expires_at"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("brama_permits", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_brama_permits_connection_id_episode_expires_at"))

    op.drop_table("brama_permits")
    with op.batch_alter_table("brama_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_brama_events_occurred_at"))
        batch_op.drop_index(batch_op.f("ix_brama_events_identifier_scope_id"))
        batch_op.drop_index(batch_op.f("ix_brama_events_connection_id_occurred_at"))
        batch_op.drop_index(batch_op.f("ix_brama_events_connection_id_kind_occurred_at"))

    op.drop_table("brama_events")
    op.drop_table("brama_connections")
