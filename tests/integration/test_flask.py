"""The Flask extension ``brama_sql.contrib.flask.BramaSQL``: config keys over options, declared
connections registered on first use and never reset, engine sharing with Flask-SQLAlchemy, the
instance-folder default, several apps per process, ``@ext.protect`` / ``ext.guard`` with the 503
of a refused call, the ``flask brama`` commands and the status blueprint; on every dialect."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, abort
from flask_sqlalchemy import SQLAlchemy
from freezegun import freeze_time
from freezegun.api import FrozenDateTimeFactory
from sqlalchemy.engine import URL

from brama_sql import Brama, CircuitOpenError, InvalidArgumentError, Kind, State
from brama_sql.contrib.flask import BramaSQL, BramaSQLState
from brama_sql.replay import verify

T0 = datetime(2031, 5, 6, 7, 8, 9, tzinfo=timezone.utc)


class Boom(Exception):
    """The dependency failed."""


@pytest.fixture
def clock() -> Iterator[FrozenDateTimeFactory]:
    with freeze_time(T0) as frozen:
        yield frozen


@pytest.fixture
def make_app(db_url: URL, tmp_path: Path) -> Iterator[Callable[..., Flask]]:
    """A factory of Flask apps on the test's database (their Bramas disposed afterwards)."""
    made: list[Flask] = []

    def make(**config: Any) -> Flask:
        app = Flask(f"app{len(made)}", instance_path=str(tmp_path / f"instance{len(made)}"))
        app.config["BRAMA_SQL_DATABASE_URI"] = db_url.render_as_string(hide_password=False)
        app.config.update(config)
        made.append(app)
        return app

    yield make
    for app in made:
        state = app.extensions.get("brama_sql")
        if isinstance(state, BramaSQLState):
            state.dispose()


def transitions_to(brama: Brama, identifier: str, state: State) -> int:
    return sum(
        event.kind is Kind.TRANSITION and event.to_state is state
        for event in brama.events(identifier)
    )


def protected_app(make_app: Callable[..., Flask], **config: Any) -> tuple[Flask, BramaSQL]:
    """An app whose ``/stock`` view calls a dependency that fails while ``app.failing``."""
    app = make_app(BRAMA_SQL_FAILURE_THRESHOLD=2, BRAMA_SQL_EXPIRY=30, **config)
    ext = BramaSQL(app)
    app.config["failing"] = False

    @app.route("/stock")
    @ext.protect("inventory-api", register=True)
    def stock() -> str:
        if app.config["failing"]:
            raise Boom("inventory down")
        return "42"

    @app.route("/item/<int:number>")
    @ext.protect("inventory-api", register=True)
    def item(number: int) -> str:
        abort(404)

    @app.route("/handled")
    def handled() -> tuple[str, int]:
        try:
            with ext.guard("inventory-api"):
                return "fresh", 200
        except CircuitOpenError:
            return "cached", 200

    return app, ext


def test_config_keys_override_the_extensions_options(make_app: Callable[..., Flask]) -> None:
    app = make_app(BRAMA_SQL_FAILURE_THRESHOLD=7, BRAMA_SQL_ON_DB_ERROR="allow")
    ext = BramaSQL(expiry=12.5, failure_threshold=3)
    ext.init_app(app)
    with app.app_context():
        brama = ext.brama
        assert (brama.failure_threshold, brama.expiry, brama.on_db_error) == (7, 12.5, "allow")
        assert ext.get_brama(app) is brama is app.extensions["brama_sql"].brama


def test_bad_options_and_keys_are_clear_errors(
    make_app: Callable[..., Flask], caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(InvalidArgumentError, match="failure_treshold"):
        BramaSQL(failure_treshold=3)
    app = make_app(BRAMA_SQL_EXPIRY=-1, BRAMA_SQL_FAILURE_TRESHOLD=3)
    ext = BramaSQL(app)
    assert "BRAMA_SQL_FAILURE_TRESHOLD" in caplog.text
    with app.app_context(), pytest.raises(InvalidArgumentError, match="expiry"):
        ext.get_brama()
    with pytest.raises(InvalidArgumentError, match="init_app"):
        BramaSQL().get_brama(app)


def test_declared_connections_are_registered_on_first_use_and_never_reset(
    make_app: Callable[..., Flask], brama: Brama
) -> None:
    brama.register("payments-api", failure_threshold=2)
    brama.failure("payments-api")
    brama.failure("payments-api")
    declared = {"payments-api": {"failure_threshold": 9}, "search": {"scope": "web"}}
    app = make_app(BRAMA_SQL_CONNECTIONS=declared)
    ext = BramaSQL(app)
    with app.app_context():
        assert brama.connections() and len(brama.connections()) == 1  # nothing written yet
        assert not ext.brama.available("payments-api")  # still open: not reset
        assert ext.brama.available("search", scope="web")  # registered by its first use
    status = brama.status("search", scope="web")
    assert status.state is State.UNKNOWN
    assert brama.status("payments-api").failure_threshold == 2
    for item in brama.connections():
        verify(brama.engine, item.identifier, item.scope)


def test_a_protected_view_reports_and_a_refused_call_is_a_503_with_retry_after(
    make_app: Callable[..., Flask], brama: Brama, clock: FrozenDateTimeFactory
) -> None:
    app, _ = protected_app(make_app)
    client = app.test_client()
    assert client.get("/stock").text == "42"
    app.config["failing"] = True
    assert client.get("/stock").status_code == 500
    assert client.get("/stock").status_code == 500  # the second failure trips
    refused = client.get("/stock")
    assert refused.status_code == 503
    assert refused.headers["Retry-After"] == "30"
    clock.tick(timedelta(seconds=20.5))
    assert client.get("/stock").headers["Retry-After"] == "10"  # 9.5 s rounded up
    status = brama.status("inventory-api")
    assert (status.state, status.total_successes, status.total_failures) == (State.OPEN, 1, 2)
    assert transitions_to(brama, "inventory-api", State.OPEN) == 1
    clock.tick(timedelta(seconds=10))
    app.config["failing"] = False
    assert client.get("/stock").status_code == 200  # the probe closes it
    assert brama.status("inventory-api").state is State.CLOSED
    verify(brama.engine, "inventory-api", None)


def test_a_view_that_handles_circuit_open_error_answers_itself(
    make_app: Callable[..., Flask], brama: Brama, clock: FrozenDateTimeFactory
) -> None:
    app, _ = protected_app(make_app)
    client = app.test_client()
    assert client.get("/stock").status_code == 200  # registers
    assert client.get("/handled").text == "fresh"
    brama.open("inventory-api")
    assert client.get("/handled").text == "cached"
    assert client.get("/stock").status_code == 503


def test_client_errors_of_a_protected_view_are_not_failures(
    make_app: Callable[..., Flask], brama: Brama
) -> None:
    app, _ = protected_app(make_app)
    client = app.test_client()
    for number in range(3):
        assert client.get(f"/item/{number}").status_code == 404
    status = brama.status("inventory-api")
    assert (status.state, status.total_failures, status.total_successes) == (State.UNKNOWN, 0, 0)


def test_one_function_protected_under_two_identifiers_reports_to_each(
    make_app: Callable[..., Flask],
) -> None:
    app = make_app()
    ext = BramaSQL(app)
    ext.get_brama(app).migrate()

    def fetch() -> int:
        return 1

    for_a = ext.protect("api-a", register=True)(fetch)
    for_b = ext.protect("api-b", register=True)(fetch)
    with app.app_context():
        for_a()
        for_b()
        for_b()
        assert ext.brama.status("api-a").total_successes == 1
        assert ext.brama.status("api-b").total_successes == 2


def test_setting_an_app_up_again_closes_its_old_brama(make_app: Callable[..., Flask]) -> None:
    app = make_app()
    ext = BramaSQL(app)
    first = ext.get_brama(app)
    first.migrate()
    first.register("svc")
    assert first.engine.pool.checkedin() >= 1  # type: ignore[attr-defined]
    ext.init_app(app)
    assert ext.get_brama(app) is not first
    assert first.engine.pool.checkedin() == 0  # type: ignore[attr-defined]
    assert ext.get_brama(app).status("svc").identifier == "svc"


def test_one_extension_serves_several_apps_each_on_its_own_database(
    make_app: Callable[..., Flask], brama: Brama, tmp_path: Path
) -> None:
    ext = BramaSQL(failure_threshold=1)
    shared, own = make_app(), make_app(BRAMA_SQL_DATABASE_URI=None)
    for app in (shared, own):
        ext.init_app(app)

        @app.route("/call")
        @ext.protect("svc", register=True)
        def call() -> str:
            raise Boom("down")

    with own.app_context():
        ext.brama.migrate()
    assert shared.test_client().get("/call").status_code == 500
    assert shared.test_client().get("/call").status_code == 503
    assert own.test_client().get("/call").status_code == 500  # its own circuit
    assert brama.status("svc").total_failures == 1
    own_file = Path(own.instance_path) / "brama.db"
    assert own_file.exists()  # the instance-folder default
    with own.app_context():
        assert ext.brama.engine.url.database == str(own_file)
        assert ext.brama.status("svc").total_failures == 1


def test_flask_sqlalchemys_engine_is_shared(make_app: Callable[..., Flask], db_url: URL) -> None:
    app = make_app(
        BRAMA_SQL_DATABASE_URI=None,
        SQLALCHEMY_DATABASE_URI=db_url.render_as_string(hide_password=False),
    )
    db = SQLAlchemy(app)
    ext = BramaSQL(app)
    with app.app_context():
        assert ext.brama.engine is db.engine
        ext.brama.register("svc")
        ext.brama.success("svc")
        assert ext.brama.status("svc").total_successes == 1
        verify(db.engine, "svc", None)
    listed = app.test_cli_runner().invoke(args=["brama", "status", "--json"])
    assert [item["total_successes"] for item in json.loads(listed.output)] == [1], listed.output
    with app.app_context():
        db.engine.dispose()


def test_flask_brama_commands_run_on_the_apps_database(
    make_app: Callable[..., Flask], brama: Brama
) -> None:
    app = make_app(BRAMA_SQL_INACTIVE_AFTER=None)
    BramaSQL(app)
    runner = app.test_cli_runner()
    assert "Already at revision" in runner.invoke(args=["brama", "migrate"]).output
    brama.register("svc", metadata={"team": "a"})
    brama.failure("svc", reason="timeout")
    listed = runner.invoke(args=["brama", "status", "--json"])
    assert listed.exit_code == 0, listed.output
    assert [item["identifier"] for item in json.loads(listed.output)] == ["svc"]
    logged = runner.invoke(args=["brama", "events", "svc", "--json"])
    assert [event["kind"] for event in json.loads(logged.output)] == [
        "registered",
        "failure",
        "transition",
    ]
    assert runner.invoke(args=["brama", "verify"]).exit_code == 0
    reported = runner.invoke(args=["brama", "report", "--since", "1h", "--json"])
    assert reported.exit_code == 0, reported.output
    assert "svc" in reported.output
    assert "Removed 0" in runner.invoke(args=["brama", "cleanup"]).output
    assert "Deleted 0" in runner.invoke(args=["brama", "prune", "--older-than", "30d"]).output
    missing = runner.invoke(args=["brama", "events", "svc", "--limit", "-1"])
    assert missing.exit_code == 2
    assert "demo" not in runner.invoke(args=["brama", "--help"]).output


def test_flask_brama_migrate_creates_the_instance_folder_database(tmp_path: Path) -> None:
    app = Flask("fresh", instance_path=str(tmp_path / "instance"))
    BramaSQL(app)
    result = app.test_cli_runner().invoke(args=["brama", "migrate"])
    assert "Migrated from an empty database" in result.output, result.output
    assert (tmp_path / "instance" / "brama.db").exists()
    app.extensions["brama_sql"].dispose()


def test_the_status_blueprint_refuses_unless_authorized(
    make_app: Callable[..., Flask], brama: Brama
) -> None:
    brama.register("svc", metadata={"token": "s3cret-value"})
    brama.failure("svc")
    app = make_app()
    ext = BramaSQL(app)
    allowed = {"yes": False}
    app.register_blueprint(ext.status_blueprint(), url_prefix="/closed")
    app.register_blueprint(
        ext.status_blueprint(lambda: allowed["yes"], name="status"), url_prefix="/status"
    )
    app.register_blueprint(
        ext.status_blueprint(lambda: True, show_metadata=True, name="full"), url_prefix="/full"
    )
    client = app.test_client()
    assert client.get("/closed/").status_code == 403
    assert client.get("/closed/status.json").status_code == 403
    assert client.get("/status/").status_code == 403
    allowed["yes"] = True
    page = client.get("/status/")
    assert page.status_code == 200
    assert page.headers["Cache-Control"] == "no-store"
    assert "svc" in page.text and "<svg" in page.text and "<script" not in page.text
    assert 'href="/status/status.json"' in page.text
    assert "s3cret-value" not in page.text
    data = client.get("/status/status.json").get_json()
    assert [(c["identifier"], c["state"]) for c in data["connections"]] == [("svc", "closed")]
    assert data["connections"][0]["metadata"] is None
    assert data["connections"][0]["metadata_keys"] == ["token"]
    assert "s3cret-value" in client.get("/full/").text
    assert client.get("/full/status.json").get_json()["connections"][0]["metadata"] == {
        "token": "s3cret-value"
    }


def test_a_refusal_with_no_known_wait_says_retry_after_one_second(
    make_app: Callable[..., Flask], brama: Brama, clock: FrozenDateTimeFactory
) -> None:
    app, _ = protected_app(make_app)
    brama.register("inventory-api", expiry=30, half_open_max_calls=1)
    brama.open("inventory-api")
    clock.tick(timedelta(seconds=31))
    permit = brama.acquire("inventory-api")  # the only probe permit, held elsewhere
    assert permit is not None
    refused = app.test_client().get("/stock")
    assert (refused.status_code, refused.headers["Retry-After"]) == (503, "1")
    permit.success()
    assert app.test_client().get("/stock").status_code == 200
    verify(brama.engine, "inventory-api", None)


def test_the_status_blueprint_serves_prometheus_metrics_to_authorized_scrapers(
    make_app: Callable[..., Flask], brama: Brama
) -> None:
    brama.register("svc", failure_threshold=1)
    brama.failure("svc")
    app = make_app()
    ext = BramaSQL(app)
    token = {"ok": False}
    app.register_blueprint(ext.status_blueprint(lambda: token["ok"]), url_prefix="/ops")
    client = app.test_client()
    assert client.get("/ops/metrics").status_code == 403
    token["ok"] = True
    scraped = client.get("/ops/metrics")
    assert scraped.status_code == 200
    assert scraped.content_type.startswith("text/plain")
    assert 'brama_sql_circuit_state{identifier="svc",scope="",state="open"} 1.0' in scraped.text
