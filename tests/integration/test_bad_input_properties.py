"""Bad input, tried systematically on every dialect: whatever the arguments, every call either
succeeds or raises a :class:`BramaError`, and a call that raised wrote nothing."""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from brama_sql import Brama, BramaError
from brama_sql.schema import metadata

AWKWARD_TEXT = [
    "",
    " ",
    "\t\n",
    "a" * 255,
    "a" * 256,
    "é" * 255,
    "😀" * 255,
    "😀" * 256,
    "nul\x00inside",
    "\ud800",
    "'; DROP TABLE brama_events; --",
    "%_\\",
    "db ",
    "DB",
    "e\u0301",
]

identifiers = st.one_of(
    st.sampled_from(AWKWARD_TEXT),
    st.text(max_size=300),
    st.integers(),
    st.binary(max_size=10),
    st.none(),
    st.floats(),
)
scopes = st.one_of(st.none(), identifiers)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
metadata_values = st.one_of(
    st.none(),
    st.datetimes(timezones=st.timezones()),
    st.datetimes(),
    st.just(datetime.min.replace(tzinfo=timezone(timedelta(hours=2)))),
    st.just(datetime.max.replace(tzinfo=timezone(timedelta(hours=-2)))),
    st.dictionaries(st.text(max_size=10), json_values, max_size=5),
    st.just({"huge": "x" * 70_000}),
    st.just({"nan": math.nan}),
    st.just({"when": datetime(2030, 1, 1, tzinfo=timezone.utc)}),
    st.just({"tuple": (1, 2)}),
    st.just({1: "int key"}),
    st.just({"set": {1}}),
    st.just(["not", "a", "dict"]),
    st.text(max_size=5),
)
thresholds = st.one_of(
    st.none(),
    st.integers(min_value=-5, max_value=2**40),
    st.just(2**63),
    st.just(2**31),
    st.booleans(),
    st.floats(),
    st.text(max_size=3),
)
durations = st.one_of(
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-10, max_value=10**12),
    st.timedeltas(min_value=timedelta(days=-1), max_value=timedelta(days=5000)),
    st.booleans(),
    st.text(max_size=3),
)
reasons = st.one_of(st.none(), st.text(max_size=20), st.just("r" * 1025), st.integers())


def _calls(brama: Brama) -> dict[str, Callable[..., Any]]:
    return {
        "register": lambda ident, scope, meta, threshold, expiry, reason: brama.register(
            ident,
            scope=scope,
            metadata=meta,
            failure_threshold=threshold,
            expiry=expiry,
            half_open_max_calls=threshold if isinstance(threshold, int) else None,
            probe_timeout=expiry,
        ),
        "success": lambda ident, scope, *_: brama.success(ident, scope=scope),
        "failure": lambda ident, scope, _m, _t, _e, reason: brama.failure(
            ident, scope=scope, reason=reason
        ),
        "open": lambda ident, scope, _m, _t, _e, reason: brama.open(
            ident, scope=scope, reason=reason
        ),
        "close": lambda ident, scope, _m, _t, _e, reason: brama.close(
            ident, scope=scope, reason=reason
        ),
        "reset": lambda ident, scope, *_: brama.reset(ident, scope=scope),
        "status": lambda ident, scope, *_: brama.status(ident, scope=scope),
        "available": lambda ident, scope, *_: brama.available(ident, scope=scope),
        "unregister": lambda ident, scope, *_: brama.unregister(ident, scope=scope),
        # `since` takes the metadata draw: dicts, aware, naive and extreme datetimes.
        "events": lambda ident, scope, meta, threshold, *_: brama.events(
            ident, scope=scope, limit=threshold, since=meta
        ),
        "connections": lambda _i, scope, *_: brama.connections(scope=scope),
        "cleanup": lambda *_: brama.cleanup(),
    }


def _rows(brama: Brama) -> tuple[int, ...]:
    with brama.engine.connect() as conn:
        return tuple(
            conn.execute(select(func.count()).select_from(table)).scalar_one()
            for table in metadata.sorted_tables
        )


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    operation=st.sampled_from(sorted(_calls(Brama("sqlite://")))),
    identifier=identifiers,
    scope=scopes,
    meta=metadata_values,
    threshold=thresholds,
    expiry=durations,
    reason=reasons,
)
def test_every_call_succeeds_or_raises_a_brama_error_and_writes_nothing(
    brama: Brama,
    operation: str,
    identifier: Any,
    scope: Any,
    meta: Any,
    threshold: Any,
    expiry: Any,
    reason: Any,
) -> None:
    brama.register("known", scope="s", exist_ok=True)
    call = _calls(brama)[operation]
    before = _rows(brama)
    try:
        call(identifier, scope, meta, threshold, expiry, reason)
    except BramaError:
        assert _rows(brama) == before, f"{operation} raised but wrote"
    # Anything else propagates and fails the test: only BramaErrors may escape.


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    threshold=thresholds,
    expiry=durations,
    inactive=durations,
    max_calls=thresholds,
    policy=st.sampled_from(["raise", "allow", "deny", "ignore", "", 1]),
    lock=durations,
)
def test_constructor_options_are_checked(
    db_url: Any,
    threshold: Any,
    expiry: Any,
    inactive: Any,
    max_calls: Any,
    policy: Any,
    lock: Any,
) -> None:
    options = {
        "failure_threshold": threshold,
        "expiry": expiry,
        "inactive_after": inactive,
        "half_open_max_calls": max_calls,
        "on_db_error": policy,
        "lock_timeout": lock,
    }
    given_options = {key: value for key, value in options.items() if value is not None}
    try:
        brama = Brama(db_url.render_as_string(hide_password=False), **given_options)
    except BramaError:
        return
    identifier = f"constructed-{uuid.uuid4().hex}"
    status = brama.register(identifier)
    assert status.failure_threshold == brama.failure_threshold
    assert status.expiry == brama.expiry
    brama.dispose()
