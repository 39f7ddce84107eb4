"""Prepared statements: the statements of every call, compiled by SQLAlchemy once per dialect
and run on the DBAPI cursor.

A statement run through :meth:`sqlalchemy.engine.Connection.execute` costs tens of
microseconds of Python on every call (its cache key, an execution context, a result object),
more than the round trip itself on SQLite and a large share of it on the servers. The
statements brama_sql runs on every ``available()``, report and ``status()`` never change, so
:class:`Prepared` keeps what SQLAlchemy compiled for them (the SQL string in the dialect's
parameter style, the order of the parameters, and the dialect's bind and result processors of
each column's type) and runs them on the connection's DBAPI cursor, inside the transaction
SQLAlchemy began. What SQLAlchemy would do with a failure is done here too: the driver's error
becomes SQLAlchemy's wrapped :class:`~sqlalchemy.exc.DBAPIError`, and a lost connection is
invalidated, so that :class:`~brama_sql.transaction.Transactions` retries as before.

An engine with ``before_cursor_execute``, ``after_cursor_execute`` or ``handle_error``
listeners (a host's tracing or error metrics, for instance) keeps seeing every statement:
there, :func:`execute` runs the statement through SQLAlchemy's ``Connection.execute`` as any
other (a read that began before the first listener was added finishes on the cursor).
"""

from __future__ import annotations

import threading
import weakref
from collections import namedtuple
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from operator import itemgetter
from typing import Any, NamedTuple

from sqlalchemy import exc
from sqlalchemy.engine import Connection, Dialect, Engine
from sqlalchemy.pool import StaticPool
from sqlalchemy.sql import ClauseElement, Executable
from sqlalchemy.sql.compiler import SQLCompiler

Processor = Callable[[Any], Any]


class Results:
    """The rows of a prepared statement, read in full (a handful at most), with the subset of
    SQLAlchemy's ``Result`` API brama_sql uses."""

    __slots__ = ("_rows", "inserted_primary_key")

    def __init__(self, rows: list[Any], inserted_primary_key: tuple[Any, ...] | None) -> None:
        self._rows = rows
        self.inserted_primary_key = inserted_primary_key
        """The new row's primary key after an ``INSERT`` of one row (a 1-tuple)."""

    def all(self) -> list[Any]:
        """Every row."""
        return self._rows

    def one(self) -> Any:
        """The one row; raises unless there is exactly one."""
        if len(self._rows) != 1:
            if not self._rows:
                raise exc.NoResultFound("No row was found when one was required")
            raise exc.MultipleResultsFound("Multiple rows were found when exactly one was required")
        return self._rows[0]

    def one_or_none(self) -> Any:
        """The row, or ``None``; raises when there are several."""
        if len(self._rows) > 1:
            raise exc.MultipleResultsFound("Multiple rows were found when one or none was required")
        return self._rows[0] if self._rows else None


class _Compiled:
    """One statement compiled for one dialect and one set of parameter names."""

    __slots__ = (
        "binds",
        "columns",
        "compiled",
        "dialect",
        "inserts",
        "order",
        "parameters",
        "returns",
        "row",
        "selects",
        "sql",
        "types",
    )

    def __init__(
        self,
        statement: Executable,
        dialect: Dialect,
        keys: Iterable[str],
        row: type[tuple[Any, ...]] | None = None,
    ) -> None:
        assert isinstance(statement, ClauseElement)
        compiled = statement.compile(dialect=dialect, column_keys=sorted(keys))
        assert isinstance(compiled, SQLCompiler)
        self.compiled = compiled
        self.sql = compiled.string
        self.order: Sequence[str] | None = compiled.positiontup if compiled.positional else None
        self.binds: list[tuple[str, Processor]] = []
        for name, bind in compiled._bind_processors.items():
            assert callable(bind)  # a sequence only for tuple-typed parameters
            self.binds.append((name, bind))
        plan = _plan(compiled)
        self.parameters = None if plan is None else _Parameters(plan, frozenset(keys), self.order)
        result_columns = compiled._result_columns
        self.dialect = dialect
        self.types = [column[3] for column in result_columns]
        self.columns: list[tuple[int, Processor]] | None = None
        """The result processors by column index, made from the first cursor's description
        (some depend on the type the driver reports)."""
        names = [column[0] for column in result_columns]
        self.row: Callable[..., Any] | None = None
        made: type[tuple[Any, ...]] | None = row
        if row is not None:
            fields = getattr(row, "_fields", None)
            if fields != tuple(names):
                raise TypeError(f"{row.__name__} has the fields {fields}, the statement {names}")
        elif names:
            made = namedtuple("Row", names, rename=True)  # type: ignore[misc,no-redef]
        if made is not None:
            # The named tuple's _make without its check of the length, which the statement's
            # columns fix.
            self.row = partial(tuple.__new__, made)
        self.returns = bool(compiled.effective_returning)
        """An ``INSERT ... RETURNING`` of the new row's key (else the cursor's ``lastrowid``)."""
        self.selects = bool(names)
        self.inserts = bool(compiled.isinsert)

    def arguments(self, given: Mapping[str, Any]) -> Any:
        """The driver's parameters for ``given`` (bound literals added, types processed)."""
        if self.parameters is not None:
            return self.parameters(given)
        values = self.compiled.construct_params(given)
        for name, processor in self.binds:
            if name in values:
                values[name] = processor(values[name])
        if self.order is None:
            return values
        return tuple(values[name] for name in self.order)

    def rows(self, cursor: Any) -> list[Any]:
        """The cursor's rows, each column through its type's result processor."""
        fetched = cursor.fetchall()
        if self.row is None:
            return list(fetched)
        columns = self.columns
        if columns is None:
            columns = self.columns = self._processors(cursor.description)
        if not columns:
            return [self.row(values) for values in fetched]
        made = []
        for values in fetched:
            listed = list(values)
            for index, processor in columns:
                value = listed[index]
                if value is not None:  # SQL NULL is None to every processor of these types
                    listed[index] = processor(value)
            made.append(self.row(listed))
        return made

    def _processors(self, description: Sequence[Sequence[Any]]) -> list[tuple[int, Processor]]:
        processors: list[tuple[int, Processor]] = []
        for index, (type_, column) in enumerate(zip(self.types, description, strict=True)):
            processor = type_._cached_result_processor(self.dialect, column[1])
            if processor is not None:
                processors.append((index, processor))
        return processors


class _Bound(NamedTuple):
    """One parameter of a compiled statement, as ``SQLCompiler.construct_params`` finds its
    value: by the parameter's key, else by its compiled name, else its default."""

    escaped: str
    key: str
    name: str
    required: bool
    default: Any
    processor: Processor | None


class _Parameters:
    """How a compiled statement's driver parameters are made from the values given, worked out
    once for the names given (a statement is compiled per set of names): where each one comes
    from (a value given by its key or its compiled name, else the literal's own value), in the
    driver's order, and which go through their type's bind processor."""

    __slots__ = ("constants", "missing", "names", "pick", "positional", "processors")

    def __init__(self, plan: list[_Bound], keys: frozenset[str], order: Sequence[str] | None):
        sources: dict[str, str] = {}
        self.constants: dict[str, Any] = {}
        """The literals' values, each under a key no given value has."""
        processors: dict[str, Processor] = {}
        self.missing: str | None = None
        """A required parameter that was not given (raised on use, as SQLAlchemy does)."""
        for bound in plan:
            if bound.key in keys:
                source = bound.key
            elif bound.name in keys:
                source = bound.name
            elif bound.required:
                self.missing = bound.key
                continue
            else:
                source = "\0" + bound.escaped
                self.constants[source] = bound.default
            sources[bound.escaped] = source
            if bound.processor is not None:
                processors[bound.escaped] = bound.processor
        self.names = list(sources)
        self.pick = _getter([sources[name] for name in self.names])
        self.processors = [
            (index, processors[name]) for index, name in enumerate(self.names) if name in processors
        ]
        self.positional: Callable[[Sequence[Any]], Sequence[Any]] | None = None
        """The values in the driver's order (a name may come several times), for a driver
        with positional parameters."""
        if order is not None and self.missing is None:
            self.positional = _getter([self.names.index(name) for name in order])

    def __call__(self, given: Mapping[str, Any]) -> Any:
        if self.missing is not None:
            raise exc.InvalidRequestError(
                f"A value is required for bind parameter {self.missing!r}"
            )
        values = self.pick({**self.constants, **given} if self.constants else given)
        if self.processors:
            values = list(values)
            for index, process in self.processors:
                values[index] = process(values[index])
        if self.positional is not None:
            return tuple(self.positional(values))
        return dict(zip(self.names, values, strict=True))


def _getter(keys: Sequence[Any]) -> Callable[[Any], Sequence[Any]]:
    """:func:`operator.itemgetter` of ``keys``, always giving a sequence (of no value or one
    too, where ``itemgetter`` would fail or give the bare value)."""
    if len(keys) > 1:
        return itemgetter(*keys)
    if not keys:
        return lambda _given: ()
    (key,) = keys
    return lambda given: (given[key],)


def _plan(compiled: SQLCompiler) -> list[_Bound] | None:
    """How to find each parameter's value, once for all executions (``construct_params`` works
    it out anew on each); ``None`` when one is computed at execution (a callable value, an
    expanding or literal parameter), which ``construct_params`` then handles."""
    if compiled.literal_execute_params or compiled.post_compile_params:
        return None
    escaped_names: Mapping[str, str] = compiled.escaped_bind_names or {}
    processors = compiled._bind_processors
    plan = []
    for bindparam, name in compiled.bind_names.items():
        if bindparam.callable is not None:
            return None
        escaped = escaped_names.get(name, name)
        processor = processors.get(escaped)
        assert processor is None or callable(processor)
        plan.append(
            _Bound(escaped, bindparam.key, name, bindparam.required, bindparam.value, processor)
        )
    return plan


class Prepared:
    """A statement built once (a module constant), compiled once per dialect (and per set of
    parameter names, for an ``INSERT`` or ``UPDATE`` whose columns they name) and run on the
    DBAPI cursor by :func:`execute`."""

    def __init__(
        self,
        statement: Any,
        row: type[tuple[Any, ...]] | None = None,
        variants: Mapping[str, Any] | None = None,
    ) -> None:
        self.statement: Executable = statement
        """The SQLAlchemy statement, as SQLAlchemy would run it."""
        self.variants: Mapping[str, Executable] = variants or {}
        """The statement written otherwise for a dialect (by name): the same rows, read in a
        way only that dialect has (PostgreSQL's ``LATERAL``, for instance)."""
        self.row = row
        """The named tuple the rows are made as (its fields the statement's columns, in order),
        or ``None`` for one made from the columns' names."""
        self._compiled: weakref.WeakKeyDictionary[Dialect, dict[frozenset[str], _Compiled]] = (
            weakref.WeakKeyDictionary()
        )
        self._last: tuple[Dialect | None, dict[frozenset[str], _Compiled]] = (None, {})
        """The dialect last compiled for and its statements (one dialect is kept alive)."""
        self._lock = threading.Lock()

    def statement_for(self, dialect: Dialect) -> Executable:
        """The statement as ``dialect`` runs it (its variant, if it has one)."""
        return self.variants.get(dialect.name, self.statement)

    def compiled(self, dialect: Dialect, keys: frozenset[str]) -> _Compiled:
        """The statement compiled for ``dialect`` and parameters named ``keys``."""
        last_dialect, last_table = self._last
        try:
            if last_dialect is dialect:  # skips the weak dictionary's lookup
                return last_table[keys]
            table = self._compiled[dialect]
            self._last = (dialect, table)
            return table[keys]
        except KeyError:
            pass
        made = _Compiled(self.statement_for(dialect), dialect, keys, self.row)
        with self._lock:
            self._compiled.setdefault(dialect, {})[keys] = made
        return made


class Raw:
    """A pooled DBAPI connection used without SQLAlchemy's ``Connection`` around it (the reads
    of :meth:`~brama_sql.transaction.Transactions.read`), with the part of ``Connection``'s
    interface that :func:`execute` uses."""

    def __init__(self, fairy: Any, engine: Engine) -> None:
        self.connection = fairy
        """The pool's proxy of the DBAPI connection (``dbapi_connection`` is the driver's)."""
        self.engine = engine
        self.dialect = engine.dialect
        self.invalidated = False

    def invalidate(self, error: BaseException | None = None) -> None:
        """Throw the DBAPI connection away (never back into the pool)."""
        self.invalidated = True
        self.connection.invalidate(error)


Executor = Connection | Raw
"""What :func:`execute` runs a statement on."""


def execute(
    conn: Executor, statement: Prepared, parameters: Mapping[str, Any] | None = None
) -> Results:
    """Run ``statement`` with ``parameters`` (one row's; a list goes through SQLAlchemy) in
    ``conn``'s transaction, on its DBAPI connection."""
    given = parameters or {}
    # A Raw connection stays on the cursor: a listener added while its read runs (a tracer
    # instrumenting the engine from another thread) sees the statements of the next call.
    if isinstance(conn, Connection) and traced(conn.engine):
        return _through_sqlalchemy(conn, statement, given)
    dialect = conn.dialect
    compiled = statement.compiled(dialect, frozenset(given))
    arguments = compiled.arguments(given)
    dbapi_connection = conn.connection.dbapi_connection
    assert dbapi_connection is not None
    # psycopg's cursor is kept with the connection between statements (see _KEPT_CURSOR),
    # unless the pool shares its one connection between threads.
    keeps = dialect.driver == "psycopg" and not isinstance(conn.engine.pool, StaticPool)
    info = conn.connection.info if keeps else None
    cursor = None if info is None else _kept_cursor(info, dbapi_connection)
    kept = cursor is not None
    if cursor is None:
        cursor = dbapi_connection.cursor()
    try:
        cursor.execute(compiled.sql, arguments)
        key: tuple[Any, ...] | None = None
        if compiled.returns:
            (returned,) = cursor.fetchall()
            key = (returned[0],)
            rows: list[Any] = []
        elif compiled.selects:
            rows = compiled.rows(cursor)
        else:
            rows = []
            if compiled.inserts:
                key = (cursor.lastrowid,)
        if kept and len(rows) > KEPT_CURSOR_ROWS:
            kept = False  # the driver holds the rows it read until its next statement
        return Results(rows, key)
    except dialect.loaded_dbapi.Error as error:
        kept = False
        raise _wrapped(conn, compiled.sql, arguments, error, cursor) from error
    except BaseException:
        kept = False
        raise
    finally:
        if not kept:
            if info is not None:
                info.pop(_KEPT_CURSOR, None)
            cursor.close()


_KEPT_CURSOR = "brama_sql.cursor"
"""Where a psycopg connection's cursor is kept between statements, in its pool record's
``info`` (which the pool empties when it replaces the DBAPI connection). psycopg's cursors
find the loaders of their columns' types anew, about 20 µs a point read here; one kept per
pooled connection finds them once. Only one thread at a time uses a pooled connection, but
a ``StaticPool`` shares its one connection between threads (and between instances, each
with its own lock): there, no cursor is kept."""
KEPT_CURSOR_ROWS = 16
"""A cursor that read more rows than this is closed, not kept: it holds its last result."""


def _kept_cursor(info: dict[str, Any], dbapi_connection: Any) -> Any:
    """The cursor kept for ``dbapi_connection`` (made and kept now if there is none; one kept
    for another connection is closed), or ``None`` if ``dbapi_connection`` is not psycopg's
    (an asyncio adapter). Kept with the connection it was made from (a wrapper, such as the
    Django integration's, makes cursors whose ``connection`` is the one it wraps)."""
    kept = info.get(_KEPT_CURSOR)
    if kept is not None:
        owner, cursor = kept
        if owner is dbapi_connection and not cursor.closed:
            return cursor
        info.pop(_KEPT_CURSOR, None)
        cursor.close()
    if not hasattr(dbapi_connection, "pgconn"):
        return None
    cursor = dbapi_connection.cursor()
    info[_KEPT_CURSOR] = (dbapi_connection, cursor)
    return cursor


def _wrapped(
    conn: Executor, sql: str, arguments: Any, error: Any, cursor: Any
) -> exc.StatementError:
    """The error SQLAlchemy would raise for the driver's ``error``; a lost connection is
    invalidated first (never back into the pool, and the caller may try again), and, as
    SQLAlchemy does, every pooled connection made before it: a server restart or a network
    reset breaks them all, and the next attempt must connect anew, not take another one."""
    dialect = conn.dialect
    lost = dialect.is_disconnect(error, conn.connection.dbapi_connection, cursor)
    if lost and not conn.invalidated:
        conn.engine.pool._invalidate(conn.connection, error, _checkin=False)
        conn.invalidate(error)
    wrapped: exc.StatementError = exc.DBAPIError.instance(
        sql,
        arguments,
        error,
        dialect.loaded_dbapi.Error,
        connection_invalidated=lost,
        dialect=dialect,
    )
    return wrapped


def traced(engine: Engine) -> bool:
    """Whether ``engine`` has listeners of each statement run on the cursor, or of the
    errors of statements (``handle_error``: a host's error metrics, its own disconnect
    rules), which only SQLAlchemy's ``Connection.execute`` calls."""
    dispatch = engine.dispatch
    return bool(
        dispatch.before_cursor_execute
        or dispatch.after_cursor_execute
        or engine.dialect.dispatch.handle_error  # a dialect event, listened to on the engine
    )


def _through_sqlalchemy(conn: Connection, statement: Prepared, given: Mapping[str, Any]) -> Results:
    result = conn.execute(statement.statement_for(conn.dialect), dict(given))
    if result.is_insert:  # its implicit RETURNING (PostgreSQL) is no row of the caller's
        return Results([], tuple(result.inserted_primary_key or ()))
    rows = list(result.all()) if result.returns_rows else []
    return Results(rows, None)
