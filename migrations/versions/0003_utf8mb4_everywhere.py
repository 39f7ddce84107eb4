"""utf8mb4 for every table and text column on MariaDB/MySQL, whatever the database's default.

Before this revision only the identifier and scope columns pinned ``utf8mb4``; the others took
the database's default character set, ``latin1`` on MariaDB before 11.6, where a reason, an
actor or a permit holder in Cyrillic, Japanese or emoji failed (error 1366) or was stored as
``?``. Each table gets ``utf8mb4`` as its default and each of those columns is converted in
place, rows kept (every ``latin1`` text converts to ``utf8mb4`` unchanged). The identifier and
scope columns are not touched, so their binary no-pad collations stay (``CONVERT TO CHARACTER
SET`` would reset them); the JSON columns are ``utf8mb4`` already. Nothing to do on PostgreSQL
and SQLite, whose text is always Unicode.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TEXT_COLUMNS = {
    "brama_connections": [("state", "VARCHAR(16)", False)],
    "brama_events": [
        ("kind", "VARCHAR(16)", False),
        ("from_state", "VARCHAR(16)", True),
        ("to_state", "VARCHAR(16)", True),
        ("reason", "VARCHAR(1024)", True),
        ("cause", "VARCHAR(16)", True),
        ("actor", "VARCHAR(255)", True),
    ],
    "brama_permits": [("holder", "VARCHAR(255)", False)],
}
"""The text columns that took the database's default character set: name, type, nullable."""


def upgrade() -> None:
    if op.get_context().dialect.name != "mysql":
        return
    for table, columns in TEXT_COLUMNS.items():
        changes = ["DEFAULT CHARACTER SET utf8mb4"] + [
            f"MODIFY {name} {type_} CHARACTER SET utf8mb4 {'NULL' if nullable else 'NOT NULL'}"
            for name, type_, nullable in columns
        ]
        op.execute(f"ALTER TABLE {table} {', '.join(changes)}")


def downgrade() -> None:
    # Nothing to undo: revision 0002 pinned no character set, so utf8mb4 tables serve it as
    # they are, and converting back to the database's default could lose every character
    # outside it.
    pass
