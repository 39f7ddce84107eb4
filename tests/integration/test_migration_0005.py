"""Revision 0005 (policies, backoff, forced states): upgrade from 0004 with rows in place, and
downgrade with rows in the new states; on every dialect."""

from __future__ import annotations

from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import URL

from brama_sql import Brama, State
from brama_sql.migration import current, downgrade, head, upgrade
from brama_sql.replay import verify

NEW_COLUMNS = {
    "expiry_strategy",
    "backoff_factor",
    "max_expiry",
    "open_period",
    "failure_rate_threshold",
    "rate_window",
    "minimum_calls",
    "slow_call_duration",
    "slow_call_rate_threshold",
    "window_counts",
}


def test_revision_0005_downgrades_forced_states_and_upgrades_with_rows_in_place(
    blank_url: URL,
) -> None:
    engine = create_engine(blank_url)
    url = blank_url.render_as_string(hide_password=False)
    try:
        upgrade(engine)
        brama = Brama(url)
        brama.register("plain", failure_threshold=3)
        brama.failure("plain", reason="timeout")
        brama.register("disabled")
        brama.disable("disabled")
        brama.register("forced")
        brama.force_open("forced")
        brama.register(
            "policies",
            failure_threshold=1,
            expiry_strategy="exponential",
            failure_rate_threshold=0.5,
            slow_call_duration=1,
            slow_call_rate_threshold=0.5,
        )
        brama.success("policies", duration=0.5)
        brama.dispose()

        downgrade(engine, "0004")
        with engine.connect() as conn:
            assert current(conn) == "0004"
            columns = {c["name"] for c in inspect(conn).get_columns("brama_connections")}
            assert not columns & NEW_COLUMNS
            assert "duration" not in {c["name"] for c in inspect(conn).get_columns("brama_events")}
            states = dict(
                conn.execute(text("SELECT identifier, state FROM brama_connections")).all()
            )
            opened = conn.execute(
                text("SELECT opened_at FROM brama_connections WHERE identifier = 'forced'")
            ).scalar()
        assert states == {
            "plain": "closed",
            "disabled": "closed",
            "forced": "open",
            "policies": "closed",
        }
        assert opened is not None, "a forced-open circuit goes back to open, expiring as usual"

        upgrade(engine)
        with engine.connect() as conn:
            assert current(conn) == head()
        brama = Brama(url)
        status = brama.status("plain")
        assert status.failure_count == 1 and status.total_failures == 1
        assert (status.expiry_strategy, status.backoff_factor) == ("fixed", 2.0)
        assert status.failure_rate_threshold is None and status.window_calls == 0
        assert brama.status("policies").expiry_strategy == "fixed", "the options went"
        assert brama.status("forced").state is State.OPEN
        brama.failure("plain")
        brama.failure("plain")
        assert brama.status("plain").state is State.OPEN
        verify(brama.engine, "plain")
        brama.dispose()
    finally:
        engine.dispose()
