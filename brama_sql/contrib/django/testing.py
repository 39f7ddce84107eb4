"""Test support: :class:`BramaTestMixin` gives each Django test case a clean set of circuits.

Under Django's test runner the project's Brama uses Django's own connection to the test
database (see :mod:`brama_sql.contrib.django.database`): what a ``TestCase`` writes into
brama_sql's tables is rolled back with the test's transaction, plain ``TestCase``\\ s
included, on SQLite (also in memory), PostgreSQL and MariaDB/MySQL, and no connection of
brama_sql's own stays open to keep the test database from being dropped.

The mixin adds what a rollback cannot: it empties brama_sql's tables before the class's tests
(rows committed by a ``TransactionTestCase`` or left by an earlier run) and after each test of
a ``TransactionTestCase`` (Django's flush leaves unmanaged tables alone), makes a new Brama
for each test (no availability cache or guard registration carried over), and closes it.
"""

from __future__ import annotations

from django.db import connections
from django.test import TestCase

from brama_sql.brama import Brama
from brama_sql.contrib.django.runtime import get_brama, read_config, reset_brama
from brama_sql.schema import metadata


def clear_circuits(alias: str | None = None) -> None:
    """Delete every row of brama_sql's tables in ``alias`` (default: ``BRAMA_SQL["DATABASE"]``)
    through Django's connection: inside a test's transaction, the deletion is rolled back
    with it. Tables that do not exist (not migrated) are skipped."""
    alias = alias or read_config().database
    connection = connections[alias]
    existing = set(connection.introspection.table_names())
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        for table in reversed(metadata.sorted_tables):
            if table.name in existing:
                cursor.execute(f"DELETE FROM {quote(table.name)}")


class BramaTestMixin:
    """Mix into a Django ``TestCase`` or ``TransactionTestCase``, before it::

        class CheckoutTests(BramaTestMixin, TestCase):
            def test_refused(self):
                self.brama.open("inventory-api")
                ...

    ``self.brama`` is the project's Brama (the one :func:`~brama_sql.contrib.django.get_brama`
    returns during the test). Each test starts with no circuits except those the class set
    up (``setUpTestData``) and the declared ones, which register on first use.
    """

    brama: Brama

    @classmethod
    def setUpClass(cls) -> None:
        """Empty brama_sql's tables before the class's transaction begins."""
        clear_circuits()
        super().setUpClass()  # type: ignore[misc]

    @classmethod
    def tearDownClass(cls) -> None:
        """Close the Brama: no connection of its own is left open."""
        super().tearDownClass()  # type: ignore[misc]
        reset_brama()

    def setUp(self) -> None:
        """A new Brama for the test, and its cleanup registered at once (``addCleanup``), so
        that it runs after ``tearDown`` and also when a later part of ``setUp`` raises."""
        reset_brama()
        self.brama = get_brama()
        self.addCleanup(self._clean_brama)  # type: ignore[attr-defined]
        super().setUp()  # type: ignore[misc]

    def _clean_brama(self) -> None:
        """After a test outside a transaction of its own, empty brama_sql's tables; close the
        test's Brama."""
        if not isinstance(self, TestCase):
            clear_circuits()
        reset_brama()

    def assert_state(self, identifier: str, state: str, *, scope: str | None = None) -> None:
        """Assert that the live state of the circuit is ``state`` (``"open"``, ...)."""
        found = self.brama.status(identifier, scope=scope).state
        assert found == state, f"{identifier}: expected {state}, found {found}"
