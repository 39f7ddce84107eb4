"""Reading a fixed set of columns of a row in one call, by name.

Building a record reads some thirty columns of each row. A SQLAlchemy ``Row`` answers an
attribute by name only after looking the name up on its class (about 0.3 µs each, most of the
cost of a status), where its ``_mapping`` answers by key in a fraction of that; any other row
(a named tuple, a plain object) is read by attribute. Either way one precomputed getter reads
every column at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from operator import attrgetter, itemgetter
from typing import Any, Generic, TypeVar

from sqlalchemy import Row

T = TypeVar("T")


class Reader(Generic[T]):
    """Reads the columns ``names`` of a row (a SQLAlchemy ``Row``, or any object with the
    columns as attributes) and makes them a record with ``make`` (e.g. a named tuple's
    ``_make``), their values in the order of ``names``."""

    def __init__(self, names: Sequence[str], make: Callable[[Iterable[Any]], T]) -> None:
        if len(names) < 2:
            raise ValueError("a Reader reads at least two columns")
        self.names = tuple(names)
        self._make = make
        self._by_key = itemgetter(*self.names)
        self._by_attribute = attrgetter(*self.names)

    def __call__(self, row: Any) -> T:
        """The record of ``row``'s columns."""
        if isinstance(row, Row):
            return self._make(self._by_key(row._mapping))
        return self._make(self._by_attribute(row))
