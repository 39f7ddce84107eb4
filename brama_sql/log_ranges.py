"""Reads of one connection's part of the event log, written for PostgreSQL's planner.

A connection's tail (its events after ``tallied_through``) and its newest event are one range
of the ``(connection_id, id)`` index. PostgreSQL has no index hints (MariaDB/MySQL's are the
``FORCE INDEX`` of the statements, SQLite's planner picks that index unaided), and its planner
has two cheaper-looking plans that read other events:

- with few connections in the table it thinks ``connection_id = c`` matches a large share of
  it, and ranges over the primary key instead, ``id > t`` filtered on ``connection_id`` (or,
  for the newest event, backwards from the newest id): a quiet connection's read goes through
  every event the busy ones logged since its last exclusive write;
- the ``(connection_id, occurred_at)`` index, which reads the connection's whole log.

So on PostgreSQL these reads name no plain bound on ``id`` that the primary key could range
over, and no equality on ``connection_id`` (a btree starts at the equality's first entry, ahead
of a row comparison); the other dialects keep the plain statements. See
``tests/integration/test_tail_plans.py``, which checks the plans, custom and generic.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    and_,
    func,
    literal_column,
    select,
    tuple_,
    type_coerce,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql import operators
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import Grouping
from sqlalchemy.sql.visitors import InternalTraversal

from brama_sql.schema import events

MAX_EVENT_ID = 2**63 - 1
"""The largest id an event can have (``BIGINT``)."""


class ByDialect(ColumnElement[Any]):
    """An expression written one way on PostgreSQL (``postgresql``) and another on every
    other dialect (``portable``, whose type it has); both over the same tables."""

    inherit_cache = True
    _traverse_internals = [  # noqa: RUF012 (SQLAlchemy declares it an instance variable)
        ("portable", InternalTraversal.dp_clauseelement),
        ("postgresql", InternalTraversal.dp_clauseelement),
    ]

    def __init__(self, portable: ColumnElement[Any], postgresql: ColumnElement[Any]) -> None:
        self.portable = portable
        self.postgresql = postgresql
        self.type = portable.type
        self._is_implicitly_boolean = portable._is_implicitly_boolean

    @property
    def _from_objects(self) -> list[Any]:
        return self.portable._from_objects

    def self_group(self, against: Any = None) -> ColumnElement[Any]:
        """Itself alone, as a whole ``WHERE`` or among ``AND``s (as each branch renders),
        else in parentheses."""
        if against is None or against is operators.and_ or against is operators._asbool:
            return self
        return Grouping(self)


@compiles(ByDialect)
def _portable(element: ByDialect, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.portable, **kw)


@compiles(ByDialect, "postgresql")
def _postgresql(element: ByDialect, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.postgresql, **kw)


def tail_of(connection_id: Any, through: Any) -> ColumnElement[bool]:
    """The events of the connection ``connection_id`` after the id ``through`` (a tail):
    ``connection_id = c AND id > t``. On PostgreSQL

    ``connection_id >= c AND connection_id <= c AND (connection_id, id) > (c, t)
    AND (connection_id, id) <= (c, 2**63 - 1)``,

    the same events, read as a range of ``(connection_id, id)`` from ``(c, t)`` to the
    connection's last event: the primary key cannot use a row comparison led by
    ``connection_id``; the row comparison ``> (c, t)`` is where the btree starts (with no
    equality on the column ahead of it, which would be the start instead); and
    ``(connection_id, occurred_at)``, the one other index it could use, can only take the
    first column of the row comparisons, so its range is the connection's whole log and its
    estimate never below that of ``(connection_id, id)`` (9 times it in a generic plan; equal
    only in a custom plan expecting a row or so of either).

    The upper row comparison is always true: it is there for the estimate. With many
    connections the estimate of a tail's rows is above that of ``connection_id = c AND id >
    t`` (``connections()`` over the fleet may be planned above ``jit_above_cost``: brama_sql's
    own engines turn JIT off)."""
    row = tuple_(events.c.connection_id, events.c.id)
    connection = type_coerce(connection_id, events.c.connection_id.type)
    return ByDialect(
        and_(events.c.connection_id == connection_id, events.c.id > through),
        and_(
            events.c.connection_id >= connection_id,
            events.c.connection_id <= connection_id,
            row > tuple_(connection, type_coerce(through, events.c.id.type)),
            row <= tuple_(connection, literal_column(str(MAX_EVENT_ID), BigInteger)),
        ),
    )


def newest_event_of(connection_id: Any) -> ColumnElement[int]:
    """The id of the connection ``connection_id``'s newest event, ``0`` without events:
    ``max(id)`` of its events. On PostgreSQL the first id backwards in ``(connection_id, id)``
    from ``connection_id <= c`` (an ``ORDER BY`` only that index gives, over ``connection_id >=
    c AND connection_id <= c``): ``max(id)`` may be read backwards through the primary key
    instead, past every newer event of other connections."""
    mine = (events.c.connection_id >= connection_id, events.c.connection_id <= connection_id)
    newest = (
        select(events.c.id)
        .where(*mine)
        .order_by(events.c.connection_id.desc(), events.c.id.desc())
        .limit(literal_column("1"))
        .scalar_subquery()
    )
    return ByDialect(
        select(func.coalesce(func.max(events.c.id), 0))
        .where(events.c.connection_id == connection_id)
        .scalar_subquery(),
        func.coalesce(newest, literal_column("0")),
    )
