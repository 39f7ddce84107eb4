"""The policy options through the web-framework integrations: Flask's ``BRAMA_SQL_*`` config
keys and extension options reach the app's ``Brama`` and its registrations."""

from __future__ import annotations

from pathlib import Path

from flask import Flask
from sqlalchemy.engine import URL

from brama_sql import State
from brama_sql.contrib.flask import BramaSQL, BramaSQLState


def test_flask_config_keys_set_the_policy_options(db_url: URL, tmp_path: Path) -> None:
    app = Flask("policies", instance_path=str(tmp_path / "instance"))
    app.config.update(
        BRAMA_SQL_DATABASE_URI=db_url.render_as_string(hide_password=False),
        BRAMA_SQL_FAILURE_RATE_THRESHOLD=0.5,
        BRAMA_SQL_MINIMUM_CALLS=2,
        BRAMA_SQL_EXPIRY_STRATEGY="exponential",
    )
    ext = BramaSQL(app, failure_threshold=100, max_expiry=600)
    try:
        with app.app_context():
            brama = ext.brama
            assert brama.policies == {
                "failure_rate_threshold": 0.5,
                "minimum_calls": 2,
                "expiry_strategy": "exponential",
                "max_expiry": 600.0,
            }
            brama.register("svc")
            brama.success("svc")
            brama.failure("svc")
            status = brama.status("svc")
            assert status.state is State.OPEN and status.max_expiry == 600.0
    finally:
        state = app.extensions["brama_sql"]
        assert isinstance(state, BramaSQLState)
        state.dispose()
