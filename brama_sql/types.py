"""Column types that behave the same on SQLite, PostgreSQL and MySQL/MariaDB."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import DateTime, String
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine


class UTCDateTime(TypeDecorator[datetime]):
    """An aware UTC datetime with microseconds on every dialect.

    PostgreSQL stores ``timestamptz``; SQLite and MySQL have no time zone type, so the value is
    stored as naive UTC and UTC is attached again when it is read. MySQL gets ``DATETIME(6)``
    because a plain ``DATETIME`` drops the fraction of a second.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "mysql":
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(DateTime(timezone=dialect.name == "postgresql"))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: brama_sql stores aware UTC times only")
        value = value.astimezone(timezone.utc)
        if dialect.name == "postgresql":
            return value
        return value.replace(tzinfo=None)

    def result_processor(
        self, dialect: Dialect, coltype: Any
    ) -> Callable[[Any], datetime | None] | None:
        """The dialect's own conversion, then UTC attached (a naive value, stored as UTC) or
        converted to: one function, where ``process_result_value`` would be called through two
        more per value (a read converts up to six times a row)."""
        convert = self.impl_instance.result_processor(dialect, coltype)
        utc = timezone.utc

        def process(value: Any) -> datetime | None:
            if convert is not None:
                value = convert(value)
            if value is None:
                return None
            zone = value.tzinfo
            if zone is utc:  # psycopg's when the session's time zone is UTC
                return value  # type: ignore[no-any-return]
            if zone is None:
                return value.replace(tzinfo=utc)  # type: ignore[no-any-return]
            return value.astimezone(utc)  # type: ignore[no-any-return]

        return process


class ExactString(TypeDecorator[str]):
    """A string compared exactly: by code point, case- and accent-sensitive, trailing spaces count.

    PostgreSQL's and SQLite's default comparisons already are. MySQL and MariaDB get a binary
    collation without pad-space (``utf8mb4_nopad_bin`` on MariaDB, ``utf8mb4_0900_bin`` on MySQL 8);
    their default collations would merge ``"DB"`` and ``"db"``, ``"é"`` and ``"e"``, or ``"db "``
    and ``"db"``.
    """

    impl = String
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        assert isinstance(self.impl_instance, String)
        length = self.impl_instance.length
        if dialect.name == "mysql":
            collation = (
                "utf8mb4_nopad_bin"
                if getattr(dialect, "is_mariadb", False)
                else ("utf8mb4_0900_bin")
            )
            return dialect.type_descriptor(
                mysql.VARCHAR(length, charset="utf8mb4", collation=collation)
            )
        return dialect.type_descriptor(String(length))


def load_json(document: str | bytes) -> Any:
    """``json.loads`` as the engines brama_sql builds parse JSON columns (their
    ``json_deserializer``): the empty object, every connection's metadata unless given, is made
    without the parser (a listing parses one document per connection)."""
    if document == (b"{}" if isinstance(document, bytes) else "{}"):  # psycopg gives bytes
        return {}
    return json.loads(document)
