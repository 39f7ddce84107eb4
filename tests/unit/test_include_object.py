"""``brama_sql.migration.include_object``: the filter a host application's Alembic uses to leave
brama_sql's tables alone, and the opposite filter of brama_sql's own migrations."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Column, Index, Integer, MetaData, String, Table, UniqueConstraint

from brama_sql.migration import (
    VERSION_TABLE,
    _include_only_brama,
    include_object,
    include_object_and,
)
from brama_sql.schema import connections, events, metadata

Hook = tuple[Any, str | None, str]
"""The arguments of an ``include_object`` call that matter: ``obj``, ``name``, ``type_``."""


def _host_table(name: str) -> Table:
    return Table(
        name,
        MetaData(),
        Column("id", Integer, primary_key=True),
        Column("code", String(20)),
        Index(f"ix_{name}_code", "code"),
        UniqueConstraint("code", name=f"uq_{name}_code"),
    )


def _objects(table: Table) -> Iterator[Hook]:
    """Every object of ``table`` that Alembic's autogenerate asks ``include_object`` about."""
    yield table, table.name, "table"
    for column in table.columns:
        yield column, column.name, "column"
    for index in table.indexes:
        yield index, str(index.name), "index"
    for constraint in table.constraints:
        if isinstance(constraint, UniqueConstraint):
            yield constraint, str(constraint.name), "unique_constraint"


def _included(hook: Hook, include: Any = include_object) -> bool:
    obj, name, type_ = hook
    return bool(include(obj, name, type_, True, None))


def _version_table() -> Table:
    """brama_sql's version table, as a host's autogenerate reflects it."""
    return Table(VERSION_TABLE, MetaData(), Column("version_num", String(32), primary_key=True))


def test_brama_sqls_tables_and_everything_in_them_are_excluded() -> None:
    hooks = [hook for table in metadata.tables.values() for hook in _objects(table)]
    assert {type_ for _, _, type_ in hooks} == {"table", "column", "index", "unique_constraint"}
    assert [hook for hook in hooks if _included(hook)] == []


def test_brama_sqls_version_table_is_excluded() -> None:
    hooks = list(_objects(_version_table()))
    assert [hook for hook in hooks if _included(hook)] == []


def test_reflected_objects_are_excluded_by_their_tables_name() -> None:
    reflected = Table(
        "brama_events", MetaData(), Column("id", Integer), Index("ix_brama_events_x", "id")
    )
    assert not any(_included(hook) for hook in _objects(reflected))


@pytest.mark.parametrize("name", ["orders", "brama_something_else", "brama", "my_brama_events"])
def test_host_tables_and_everything_in_them_are_included(name: str) -> None:
    hooks = list(_objects(_host_table(name)))
    assert len(hooks) == 5  # the table, 2 columns, an index, a unique constraint
    assert all(_included(hook) for hook in hooks)


def test_a_table_added_to_the_models_later_is_excluded() -> None:
    hook: Hook = (None, "brama_future", "table")
    assert _included(hook)
    table = Table("brama_future", metadata, Column("id", Integer, primary_key=True))
    try:
        assert not _included(hook)
        assert not any(_included(hook) for hook in _objects(table))
    finally:
        metadata.remove(table)
    assert _included(hook)


def test_objects_of_no_known_table_are_included() -> None:
    assert _included((object(), "ix_orphan", "index"))
    assert _included((None, None, "foreign_key_constraint"))


def test_include_object_and_asks_the_hosts_filters_only_about_the_hosts_objects() -> None:
    asked: list[str | None] = []

    def not_archive(obj: Any, name: str | None, type_: str, *_: Any) -> bool:
        asked.append(name)
        return name != "archive"

    include = include_object_and(not_archive, lambda *_: True)
    assert not _included((connections, connections.name, "table"), include)
    assert not _included((events.c.kind, "kind", "column"), include)
    assert not _included((None, "archive", "table"), include)
    assert _included((None, "orders", "table"), include)
    assert asked == ["archive", "orders"]
    assert not _included((None, "orders", "table"), include_object_and(lambda *_: False))


def test_brama_sqls_own_migrations_look_only_at_brama_sqls_tables() -> None:
    """The opposite filter of ``migrations/env.py``: a table named ``brama_*`` that left the
    models is still seen (so a revision can drop it); host tables and the version table are not."""
    for table in [*metadata.tables.values(), _host_table("brama_dropped_later")]:
        assert all(_included(hook, _include_only_brama) for hook in _objects(table))
    for table in [_host_table("orders"), _version_table()]:
        assert not _included((table, table.name, "table"), _include_only_brama)
        assert not any(
            _included(hook, _include_only_brama) for hook in _objects(table) if hook[2] != "table"
        )
