"""The Django app under Django's own test runner (run by tests/integration/test_django.py on
SQLite, PostgreSQL and MariaDB)."""

from __future__ import annotations

import importlib
import io
from datetime import datetime, timedelta, timezone

from django.contrib.auth.models import User
from django.core import checks
from django.core.management import call_command
from django.db import connection
from django.test import TestCase, TransactionTestCase
from freezegun import freeze_time

from brama_sql import NotRegisteredError, State
from brama_sql.contrib.django import get_brama
from brama_sql.contrib.django.database import SharedConnection
from brama_sql.contrib.django.testing import BramaTestMixin
from site_app import inventory
from site_app.models import Order

LEAK = "leak-check"


def importable(name: str) -> bool:
    """Whether ``name`` imports (django-health-check is an optional package)."""
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


def brama_rows() -> int:
    """Rows of brama_connections, read through Django's connection."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT COUNT(*) FROM brama_connections")
        return int(cursor.fetchone()[0])


def verify() -> None:
    """Every circuit's log explains its row (``manage.py brama verify``)."""
    out = io.StringIO()
    call_command("brama", "verify", stdout=out)
    assert "0 not explained" in out.getvalue(), out.getvalue()


class PlainTestCaseDoesNotLeak(TestCase):
    """Plain TestCases: what one writes is rolled back with it (both tests check and write)."""

    def check_clean_then_open(self) -> None:
        brama = get_brama()
        with self.assertRaises(NotRegisteredError):
            brama.status(LEAK)
        brama.register(LEAK)
        brama.open(LEAK)
        self.assertEqual(brama.status(LEAK).state, State.OPEN)
        verify()

    def test_a(self) -> None:
        self.check_clean_then_open()

    def test_b(self) -> None:
        self.check_clean_then_open()


class UsesTheTestDatabase(TestCase):
    def test_shares_djangos_connection_to_the_test_database(self) -> None:
        brama = get_brama()
        with brama.engine.connect() as shared:
            self.assertIsInstance(shared.connection.dbapi_connection, SharedConnection)
        brama.failure("inventory-api", reason="seen by Django's cursor")
        self.assertEqual(brama_rows(), 1)  # the same connection and transaction
        name = str(connection.settings_dict["NAME"])
        self.assertTrue(name.startswith("test_") or connection.is_in_memory_db(), name)

    def test_a_site_write_and_a_report_in_one_test_transaction(self) -> None:
        # SQLite raised "database table is locked" when brama_sql used a second connection.
        Order.objects.create(item="pen")
        get_brama().failure("inventory-api")
        Order.objects.create(item="ink")
        self.assertEqual(Order.objects.count(), 2)
        self.assertEqual(get_brama().status("inventory-api").failure_count, 1)
        verify()


class SessionAfterAReport(TestCase):
    def test_lock_limits_do_not_outlive_the_report(self) -> None:
        get_brama().failure("inventory-api")
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SHOW idle_in_transaction_session_timeout")
                self.assertEqual(cursor.fetchone()[0], "0")
        Order.objects.create(item="pen")  # the test's transaction goes on
        self.assertEqual(Order.objects.count(), 1)


class ProtectedView(BramaTestMixin, TestCase):
    def setUp(self) -> None:
        super().setUp()
        inventory.state.update(broken=False, calls=0)

    def test_trips_once_then_refuses_with_503_and_heals(self) -> None:
        start = datetime(2026, 1, 5, 12, 0, tzinfo=timezone.utc)
        with freeze_time(start) as clock:
            self.assertEqual(self.client.get("/order/pen/").json(), {"item": "pen", "stock": 7})
            inventory.state["broken"] = True
            for _ in range(3):  # the declared threshold
                with self.assertRaises(inventory.InventoryDown):
                    self.client.get("/order/pen/")
            self.assert_state("inventory-api", "open")
            calls = inventory.state["calls"]
            refused = self.client.get("/order/pen/")
            self.assertEqual(refused.status_code, 503)
            self.assertEqual(refused["Retry-After"], "30")
            self.assertEqual(inventory.state["calls"], calls)  # not called while open
            inventory.state["broken"] = False
            clock.tick(timedelta(seconds=31))
            self.assertEqual(self.client.get("/order/pen/").status_code, 200)  # the probe
            self.assert_state("inventory-api", "closed")
        trips = [
            event for event in self.brama.events("inventory-api") if event.to_state == State.OPEN
        ]
        self.assertEqual(len(trips), 1)
        verify()


class MixinOnTestCase(BramaTestMixin, TestCase):
    @classmethod
    def setUpTestData(cls) -> None:
        get_brama().register("payments-api", failure_threshold=1)

    def test_a_trips(self) -> None:
        self.brama.failure("payments-api")
        self.assert_state("payments-api", "open")

    def test_b_starts_from_set_up_data(self) -> None:
        self.assertEqual(self.brama.status("payments-api").state, State.UNKNOWN)
        self.assertEqual([s.identifier for s in self.brama.connections()], ["payments-api"])


class MixinOnTransactionTestCase(BramaTestMixin, TransactionTestCase):
    def check_clean_then_trip(self) -> None:
        self.assertEqual(self.brama.connections(), [])
        self.brama.register("search-api", failure_threshold=1)
        self.brama.failure("search-api")
        self.assert_state("search-api", "open")
        verify()

    def test_a(self) -> None:
        self.check_clean_then_trip()

    def test_b(self) -> None:
        self.check_clean_then_trip()


class Admin(BramaTestMixin, TestCase):
    def setUp(self) -> None:
        super().setUp()
        self.admin = User.objects.create_superuser("ops", "ops@example.com", "secret")
        self.client.force_login(self.admin)

    def test_lists_the_live_state_not_the_stale_row(self) -> None:
        start = datetime(2026, 1, 5, 12, 0, tzinfo=timezone.utc)
        with freeze_time(start) as clock:
            self.brama.register("mail-api", expiry=10)
            self.brama.open("mail-api")
            clock.tick(timedelta(seconds=11))
            page = self.client.get("/admin/brama_sql/connection/")
            self.assertContains(page, "half_open")
            with connection.cursor() as cursor:
                cursor.execute("SELECT state FROM brama_connections")
                self.assertEqual(cursor.fetchone()[0], "open")  # the row is stale
            events = self.client.get("/admin/brama_sql/event/")
            self.assertContains(events, "manual_open")
            opened = self.client.get("/admin/brama_sql/event/?cause=manual_open")
            self.assertEqual(len(opened.context["cl"].result_list), 1)

    def test_actions_go_through_the_api(self) -> None:
        self.brama.register("mail-api")
        pk = self._pk("mail-api")
        for action, state in (("open_circuits", "open"), ("close_circuits", "closed")):
            response = self.client.post(
                "/admin/brama_sql/connection/",
                {"action": action, "_selected_action": [pk]},
                follow=True,
            )
            self.assertEqual(response.status_code, 200)
            self.assert_state("mail-api", state)
        reasons = [event.reason for event in self.brama.events("mail-api")]
        self.assertIn("admin: ops", reasons)
        verify()

    def test_nothing_can_be_added_changed_or_deleted(self) -> None:
        self.brama.register("mail-api")
        self.assertEqual(self.client.get("/admin/brama_sql/connection/add/").status_code, 403)
        pk = self._pk("mail-api")
        response = self.client.post(f"/admin/brama_sql/connection/{pk}/delete/", {"post": "yes"})
        self.assertEqual(response.status_code, 403)
        self.assertEqual(len(self.brama.connections()), 1)

    def test_staff_without_the_permission_cannot_open(self) -> None:
        self.brama.register("mail-api")
        viewer = User.objects.create_user("viewer", password="x", is_staff=True)
        viewer.user_permissions.add(*self._view_permissions())
        self.client.force_login(viewer)
        page = self.client.get("/admin/brama_sql/connection/")
        self.assertEqual(page.status_code, 200)
        self.assertNotContains(page, "open_circuits")

    def _pk(self, identifier: str) -> int:
        with connection.cursor() as cursor:
            cursor.execute("SELECT id FROM brama_connections WHERE identifier = %s", [identifier])
            return int(cursor.fetchone()[0])

    def _view_permissions(self) -> list[object]:
        from django.contrib.auth.models import Permission

        return list(Permission.objects.filter(codename__in=["view_connection", "view_event"]))


class Commands(BramaTestMixin, TestCase):
    def test_status_and_events_delegate_to_the_command_line(self) -> None:
        self.brama.failure("inventory-api", reason="timeout")  # declared: registers
        out = io.StringIO()
        call_command("brama", "status", "--json", stdout=out)
        self.assertIn('"identifier": "inventory-api"', out.getvalue())
        out = io.StringIO()
        call_command("brama", "events", "inventory-api", stdout=out)
        self.assertIn("timeout", out.getvalue())

    def test_report_delegates_too(self) -> None:
        self.brama.failure("inventory-api", reason="timeout")
        out = io.StringIO()
        call_command("brama", "report", "--since", "1h", "--json", stdout=out)
        self.assertIn('"identifier": "inventory-api"', out.getvalue())

    def test_unknown_subcommand(self) -> None:
        from django.core.management.base import CommandError

        with self.assertRaises(CommandError):
            call_command("brama", "demo")


class Checks(TestCase):
    def test_schema_is_current(self) -> None:
        found = checks.run_checks(databases=["default"], tags=[checks.Tags.database])
        self.assertEqual([m for m in found if m.id and m.id.startswith("brama_sql")], [])

    def test_health_check_passes(self) -> None:
        if not importable("health_check"):
            self.skipTest("django-health-check is not installed (it is optional)")
        from brama_sql.contrib.django.health import BramaHealthCheck

        BramaHealthCheck().run()  # raises ServiceUnavailable when unhealthy


class StatusPage(BramaTestMixin, TestCase):
    """The page and its JSON twin behind the staff login."""

    def test_needs_a_staff_login(self) -> None:
        self.assertEqual(self.client.get("/brama/").status_code, 302)
        user = User.objects.create_user("someone", password="x")
        self.client.force_login(user)
        self.assertEqual(self.client.get("/brama/").status_code, 403)

    def test_shows_the_circuits_to_staff(self) -> None:
        self.brama.register("mail-api")
        self.brama.open("mail-api")
        staff = User.objects.create_user("staff", password="x", is_staff=True)
        self.client.force_login(staff)
        page = self.client.get("/brama/")
        self.assertContains(page, "mail-api")
        data = self.client.get("/brama/status.json")
        self.assertEqual(data.status_code, 200)
        self.assertIn("mail-api", data.content.decode())

    def test_shows_metadata_only_when_allowed(self) -> None:
        self.brama.register("mail-api", metadata={"owner": "team-secret-42"})
        staff = User.objects.create_user("staff", password="x", is_staff=True)
        self.client.force_login(staff)
        for url in ("/brama/", "/brama/status.json"):
            self.assertNotIn("team-secret-42", self.client.get(url).content.decode())
        with self.settings(BRAMA_SQL={"STATUS_PAGE": {"SHOW_METADATA": True}}):
            self.assertIn("team-secret-42", self.client.get("/brama/").content.decode())

    def test_login_can_be_switched_off(self) -> None:
        with self.settings(BRAMA_SQL={"STATUS_PAGE": {"LOGIN_REQUIRED": False}}):
            self.assertEqual(self.client.get("/brama/").status_code, 200)


class Metrics(BramaTestMixin, TestCase):
    """The Prometheus view."""

    def test_exposition(self) -> None:
        self.brama.register("mail-api")
        self.brama.open("mail-api")
        response = self.client.get("/metrics")
        self.assertEqual(response.status_code, 200)
        self.assertIn("mail-api", response.content.decode())
