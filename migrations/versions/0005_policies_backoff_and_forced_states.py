"""Per-connection policies: backoff, failure-rate and slow-call windows, forced states.

``brama_connections`` gains the options of the exponential backoff (``expiry_strategy``,
``backoff_factor``, ``max_expiry``) and the current open period (``open_period``), the options
of the failure-rate and slow-call policies (``failure_rate_threshold``, ``rate_window`` -- the
API's ``window``, a reserved word in MySQL 8 --, ``minimum_calls``, ``slow_call_duration``,
``slow_call_rate_threshold``) and their sliding-window counters (``window_counts``, JSON);
``brama_events`` gains the ``duration`` of a reported call. Existing rows keep their data: the
fixed expiry, no rate policy, no counters.

Downgrading drops those columns. The older release knows neither ``disabled`` nor
``forced_open``: a disabled circuit goes back to ``closed`` and a forced-open one to ``open``
(its ``opened_at`` kept, so it expires as an ordinary open circuit). Their ``transition``
events stay in the log, so ``verify`` of the older release fails on those connections (as it
does after a prune, see 0004).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

JSON_DOCUMENT = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("brama_connections", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "expiry_strategy", sa.String(length=16), server_default="fixed", nullable=False
            )
        )
        batch_op.add_column(
            sa.Column("backoff_factor", sa.Double(), server_default="2", nullable=False)
        )
        for name in (
            "max_expiry",
            "open_period",
            "failure_rate_threshold",
            "rate_window",
        ):
            batch_op.add_column(sa.Column(name, sa.Double(), nullable=True))
        batch_op.add_column(sa.Column("minimum_calls", sa.Integer(), nullable=True))
        for name in ("slow_call_duration", "slow_call_rate_threshold"):
            batch_op.add_column(sa.Column(name, sa.Double(), nullable=True))
        batch_op.add_column(sa.Column("window_counts", JSON_DOCUMENT, nullable=True))
    with op.batch_alter_table("brama_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("duration", sa.Double(), nullable=True))


def downgrade() -> None:
    op.execute("UPDATE brama_connections SET state = 'closed' WHERE state = 'disabled'")
    op.execute("UPDATE brama_connections SET state = 'open' WHERE state = 'forced_open'")
    with op.batch_alter_table("brama_events", schema=None) as batch_op:
        batch_op.drop_column("duration")
    with op.batch_alter_table("brama_connections", schema=None) as batch_op:
        for name in (
            "window_counts",
            "slow_call_rate_threshold",
            "slow_call_duration",
            "minimum_calls",
            "rate_window",
            "failure_rate_threshold",
            "open_period",
            "max_expiry",
            "backoff_factor",
            "expiry_strategy",
        ):
            batch_op.drop_column(name)
