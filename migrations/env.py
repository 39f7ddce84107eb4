"""Alembic environment of brama_sql: runs on the connection that brama_sql passes in."""

from __future__ import annotations

from typing import Any

from alembic import context
from sqlalchemy import engine_from_config, pool
from sqlalchemy.engine import Connection

from brama_sql.migration import VERSION_TABLE
from brama_sql.schema import TABLE_PREFIX, metadata


def include_object(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """Look only at brama_sql's own tables: the host application's are none of our business."""
    if type_ == "table":
        return bool(name and name.startswith(TABLE_PREFIX)) and name != VERSION_TABLE
    table = getattr(obj, "table", None)
    return table is None or str(table.name).startswith(TABLE_PREFIX)


def run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        include_object=include_object,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is not None:
    run(connection)
else:
    # Invoked by the `alembic` command line with alembic.ini (developers generating revisions).
    engine = engine_from_config(
        context.config.get_section(context.config.config_ini_section, {}),
        prefix="sqlalchemy.",
        poolclass=pool.NullPool,
    )
    with engine.connect() as fresh:
        run(fresh)
        fresh.commit()
