"""The brama_sql tables. Alembic scripts in ``migrations/`` create them; this module describes them
for queries and for the check that models and migrations agree."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Double,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB

from brama_sql.types import ExactString, UTCDateTime

IDENTIFIER_LENGTH = 255
REASON_LENGTH = 1024
UNSCOPED = ""
"""How the unscoped connection (``scope=None``) is stored: an empty scope, which the API rejects
as a real scope, so ``UNIQUE (identifier, scope)`` holds on every dialect without NULLs."""

TABLE_PREFIX = "brama_"
BIG_ID = BigInteger().with_variant(Integer, "sqlite")
"""A 64-bit key (SQLite autoincrements only an ``INTEGER PRIMARY KEY``)."""
MYSQL_CHARSET = "utf8mb4"
"""The character set of every brama_sql table and text column on MariaDB/MySQL, whatever the
database's default (``latin1`` on MariaDB before 11.6): any reason, actor or metadata fits.
``ExactString`` columns add their binary collation; the others take utf8mb4's default one."""
JSON_DOCUMENT = JSON().with_variant(JSONB(), "postgresql")
"""A JSON value: ``jsonb`` on PostgreSQL (indexable, ``@>`` queries, Django's ``JSONField``),
``JSON`` on MySQL/MariaDB (text checked by ``json_valid`` on MariaDB), text on SQLite."""
OPTIONAL_JSON_DOCUMENT = JSON(none_as_null=True).with_variant(
    JSONB(none_as_null=True), "postgresql"
)
"""A :data:`JSON_DOCUMENT` that may be absent: Python's ``None`` is stored as SQL ``NULL``
(not the JSON document ``null``, which every read would hand to the JSON parser). Older rows
may hold ``null`` documents, which read back as ``None`` too."""

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
    }
)

connections = Table(
    "brama_connections",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("identifier", ExactString(IDENTIFIER_LENGTH), nullable=False),
    Column("scope", ExactString(IDENTIFIER_LENGTH), nullable=False),
    Column("state", String(16), nullable=False),
    Column("failure_count", Integer, nullable=False),
    Column("opened_at", UTCDateTime(), nullable=True),
    Column("failure_threshold", Integer, nullable=False),
    Column("expiry", Double(), nullable=False),
    Column("half_open_max_calls", Integer, nullable=True),
    Column("probe_timeout", Double(), nullable=True),
    Column("episode", Integer, nullable=False),
    Column("metadata", JSON_DOCUMENT, nullable=False),
    Column("registered_at", UTCDateTime(), nullable=False),
    Column("successes", BigInteger, nullable=False, server_default="0"),
    Column("failures", BigInteger, nullable=False, server_default="0"),
    Column("last_success_at", UTCDateTime(), nullable=True),
    Column("last_failure_at", UTCDateTime(), nullable=True),
    Column("last_transition_at", UTCDateTime(), nullable=True),
    Column("last_event_at", UTCDateTime(), nullable=True),
    Column("tallied_through", BigInteger, nullable=False, server_default="0"),
    Column("pruned_through", BigInteger, nullable=False, server_default="0"),
    Column("checkpoint", OPTIONAL_JSON_DOCUMENT, nullable=True),
    Column("expiry_strategy", String(16), nullable=False, server_default="fixed"),
    Column("backoff_factor", Double(), nullable=False, server_default="2"),
    Column("max_expiry", Double(), nullable=True),
    Column("open_period", Double(), nullable=True),
    Column("failure_rate_threshold", Double(), nullable=True),
    Column("rate_window", Double(), nullable=True),
    Column("minimum_calls", Integer, nullable=True),
    Column("slow_call_duration", Double(), nullable=True),
    Column("slow_call_rate_threshold", Double(), nullable=True),
    Column("window_counts", OPTIONAL_JSON_DOCUMENT, nullable=True),
    Column("transitions", OPTIONAL_JSON_DOCUMENT, nullable=True),
    UniqueConstraint("identifier", "scope"),
    sqlite_autoincrement=True,
    mysql_charset=MYSQL_CHARSET,
)
"""One row per registered connection: its circuit, its options and the tallies of its log.

The tallies (``successes``, ``failures`` and the ``last_*_at`` times of its reports, transitions
and events) count its events up to the id ``tallied_through``. Every write under the exclusive
row lock folds into them its own events and the few after ``tallied_through`` (the tail), so
reading them costs the same at a thousand events as at a billion; a healthy success, written
under the shared lock, only appends its event to the tail. ``verify`` checks them against the
log.
``pruned_through`` is the id of the newest event :meth:`~brama_sql.Brama.prune` deleted, and
``checkpoint`` (JSON) what replaying the log up to it gave: the circuit, the settings and the
tallies at that point, from which ``verify`` replays the rest.
``expiry_strategy``, ``backoff_factor`` and ``max_expiry`` drive the backoff; ``open_period``
is the open period of the current episode under the exponential strategy (``NULL``: the
expiry). ``failure_rate_threshold``, ``rate_window`` (the API's ``window``), ``minimum_calls``,
``slow_call_duration`` and ``slow_call_rate_threshold`` are the rate policies, and
``window_counts`` (JSON) their time buckets (see :mod:`brama_sql.window`). ``transitions``
(JSON) is the tally of its transitions by cause and target state, ``{"<cause>:<to_state>":
count}`` (``NULL``: none), which the Prometheus collector reads."""

events = Table(
    "brama_events",
    metadata,
    Column("id", BIG_ID, primary_key=True, autoincrement=True),
    Column("connection_id", Integer, nullable=False),
    Column("identifier", ExactString(IDENTIFIER_LENGTH), nullable=False),
    Column("scope", ExactString(IDENTIFIER_LENGTH), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("occurred_at", UTCDateTime(), nullable=False),
    Column("from_state", String(16), nullable=True),
    Column("to_state", String(16), nullable=True),
    Column("reason", String(REASON_LENGTH), nullable=True),
    Column("failure_count", Integer, nullable=False),
    Column("cause", String(16), nullable=True),
    Column("probe", Boolean, nullable=False),
    Column("actor", String(255), nullable=True),
    Column("details", OPTIONAL_JSON_DOCUMENT, nullable=True),
    Column("call_id", BigInteger, nullable=True),
    Column("duration", Double(), nullable=True),
    Index(None, "connection_id", "id"),
    Index(None, "connection_id", "occurred_at"),
    Index(None, "identifier", "scope", "id"),
    Index(None, "occurred_at"),
    sqlite_autoincrement=True,
    mysql_charset=MYSQL_CHARSET,
)
"""The append-only log: rows are inserted, never updated. ``connection_id`` is the id the
connection's row had (no foreign key: the history outlives the row). ``call_id`` is a random
number shared by the events of one call, by which a call whose commit reply was lost finds out
whether it committed (looked up through the ``(connection_id, occurred_at)`` index, so it needs
no index of its own)."""

permits = Table(
    "brama_permits",
    metadata,
    Column("id", BIG_ID, primary_key=True, autoincrement=True),
    Column("connection_id", Integer, nullable=False),
    Column("episode", Integer, nullable=False),
    Column("holder", String(255), nullable=False),
    Column("claimed_at", UTCDateTime(), nullable=False),
    Column("expires_at", UTCDateTime(), nullable=False),
    Index(None, "connection_id", "episode", "expires_at"),
    mysql_charset=MYSQL_CHARSET,
)
"""Probe permits of half-open circuits whose ``half_open_max_calls`` is set: one row per caller
let through, until its report settles it or ``expires_at`` passes. Only ever touched while the
connection's row lock is held."""


rollups = Table(
    "brama_rollups",
    metadata,
    Column("connection_id", Integer, primary_key=True),
    Column("hour", UTCDateTime(), primary_key=True),
    Column("identifier", ExactString(IDENTIFIER_LENGTH), nullable=False),
    Column("scope", ExactString(IDENTIFIER_LENGTH), nullable=False),
    Column("events", BigInteger, nullable=False),
    Column("successes", BigInteger, nullable=False),
    Column("failures", BigInteger, nullable=False),
    Column("transitions", BigInteger, nullable=False),
    Column("trips", BigInteger, nullable=False),
    Column("first_event_id", BigInteger, nullable=False),
    Column("last_event_id", BigInteger, nullable=False),
    Index(None, "hour"),
    Index(None, "identifier", "scope", "hour"),
    mysql_charset=MYSQL_CHARSET,
)
"""What :meth:`~brama_sql.Brama.prune` deleted, per connection (row id, as in the log) and per
hour of ``occurred_at``: how many events, reports of each kind, transitions, and transitions to
``open`` (trips); the ids of the first and last event folded in. The log's totals over any span
of whole hours are these plus the events still in the log."""


def stored_scope(scope: str | None) -> str:
    """The value stored in the ``scope`` column for an API scope."""
    return UNSCOPED if scope is None else scope


def api_scope(stored: str) -> str | None:
    """The API scope for a value of the ``scope`` column."""
    return None if stored == UNSCOPED else stored
