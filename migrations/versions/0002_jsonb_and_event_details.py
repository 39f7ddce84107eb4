"""Event details (what a registration or a reconfiguration recorded) and call ids (which call
wrote an event, to confirm a commit whose reply was lost); ``jsonb`` metadata on PostgreSQL.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

JSON_DOCUMENT = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.add_column("brama_events", sa.Column("details", JSON_DOCUMENT, nullable=True))
    op.add_column("brama_events", sa.Column("call_id", sa.BigInteger(), nullable=True))
    if op.get_context().dialect.name == "postgresql":
        # In place, rows kept: every stored json value is valid jsonb.
        op.alter_column(
            "brama_connections",
            "metadata",
            type_=postgresql.JSONB(),
            existing_type=sa.JSON(),
            existing_nullable=False,
            postgresql_using="metadata::jsonb",
        )


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.alter_column(
            "brama_connections",
            "metadata",
            type_=sa.JSON(),
            existing_type=postgresql.JSONB(),
            existing_nullable=False,
            postgresql_using="metadata::json",
        )
    with op.batch_alter_table("brama_events", schema=None) as batch_op:
        batch_op.drop_column("call_id")
        batch_op.drop_column("details")
