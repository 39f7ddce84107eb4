"""The project's :class:`~brama_sql.Brama`: made from the ``BRAMA_SQL`` setting on first use.

Nothing here touches the database before :func:`get_brama` is called (never at import, never
in ``AppConfig.ready()``), so the test runner's database, created after the settings were
read, is the one used. The instance is made again when the database it was made for changes
(the test runner switches ``NAME`` to the test database) or when the settings change
(``override_settings``).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import DEFAULT_DB_ALIAS, connections

from brama_sql.brama import Brama
from brama_sql.contrib.django import database
from brama_sql.errors import BramaError
from brama_sql.guard import FirstUses
from brama_sql.options import Registration
from brama_sql.rows import Identity

SETTING = "BRAMA_SQL"
KEYS = frozenset({"DATABASE", "OPTIONS", "CONNECTIONS", "SHARE_CONNECTION", "STATUS_PAGE"})
STATUS_PAGE_KEYS = frozenset({"LOGIN_REQUIRED", "SHOW_METADATA"})


@dataclass(frozen=True)
class Config:
    """The ``BRAMA_SQL`` setting, checked."""

    database: str = DEFAULT_DB_ALIAS
    """The alias in ``DATABASES`` whose database holds brama_sql's tables."""
    options: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of :class:`~brama_sql.Brama` (``failure_threshold``, ``expiry``, ...)."""
    connections: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Declared connections, ``{identifier: {option: value}}`` (see ``Brama.declare``)."""
    share_connection: bool | None = None
    """Use Django's own connection (``True``), an engine of brama_sql's own (``False``), or
    Django's under the test runner and for an in-memory SQLite database only (``None``)."""
    page_login_required: bool = True
    """Whether the status page and its JSON need a staff login (``STATUS_PAGE``)."""
    page_show_metadata: bool = False
    """Whether the status page shows the connections' metadata values (``STATUS_PAGE``)."""


def read_config() -> Config:
    """The ``BRAMA_SQL`` setting (absent: every default), or :class:`ImproperlyConfigured`."""
    given = getattr(settings, SETTING, None)
    if given is None:
        return Config()
    if not isinstance(given, Mapping):
        raise ImproperlyConfigured(f"{SETTING} must be a dict, not {type(given).__name__}")
    unknown = sorted(str(key) for key in given if key not in KEYS)
    if unknown:
        raise ImproperlyConfigured(
            f"{SETTING} has unknown keys {', '.join(unknown)} (known: {', '.join(sorted(KEYS))})"
        )
    alias = given.get("DATABASE", DEFAULT_DB_ALIAS)
    if alias not in settings.DATABASES:
        raise ImproperlyConfigured(
            f"{SETTING}['DATABASE'] is {alias!r}, which is not in DATABASES "
            f"({', '.join(map(repr, settings.DATABASES))})"
        )
    options = given.get("OPTIONS") or {}
    declared = given.get("CONNECTIONS") or {}
    share = given.get("SHARE_CONNECTION")
    for key, value in (("OPTIONS", options), ("CONNECTIONS", declared)):
        if not isinstance(value, Mapping):
            raise ImproperlyConfigured(f"{SETTING}[{key!r}] must be a dict")
    if "connections" in options:
        raise ImproperlyConfigured(
            f"{SETTING}['OPTIONS'] cannot hold connections: use {SETTING}['CONNECTIONS']"
        )
    if share is not None and not isinstance(share, bool):
        raise ImproperlyConfigured(f"{SETTING}['SHARE_CONNECTION'] must be True, False or None")
    page = given.get("STATUS_PAGE") or {}
    if not isinstance(page, Mapping) or not set(page) <= STATUS_PAGE_KEYS:
        raise ImproperlyConfigured(
            f"{SETTING}['STATUS_PAGE'] must be a dict with keys among "
            f"{', '.join(sorted(STATUS_PAGE_KEYS))}"
        )
    return Config(
        alias,
        dict(options),
        {k: dict(v) for k, v in declared.items()},
        share,
        page_login_required=bool(page.get("LOGIN_REQUIRED", True)),
        page_show_metadata=bool(page.get("SHOW_METADATA", False)),
    )


def under_test_runner() -> bool:
    """Whether Django's test environment is set up (``setup_test_environment()``, which the
    test runner and pytest-django call)."""
    from django.test.utils import _TestState

    return hasattr(_TestState, "saved_data")


class _Forgetful(FirstUses):
    """First uses that are never remembered: on Django's shared connection a test's
    registrations are rolled back with it, so a guard must make sure of them each time."""

    def seen(self, identity: Identity, registration: Registration) -> bool:
        return False


@dataclass
class _Made:
    key: tuple[Any, ...]
    brama: Brama
    shared: bool


_lock = threading.Lock()
_current: _Made | None = None


def get_brama() -> Brama:
    """The project's :class:`~brama_sql.Brama`, made from the settings on first use.

    Raises :class:`~django.core.exceptions.ImproperlyConfigured` for a bad ``BRAMA_SQL``
    setting, and :class:`~brama_sql.InvalidArgumentError` for bad ``OPTIONS``/``CONNECTIONS``.
    """
    global _current
    config = read_config()
    wrapper = connections[config.database]
    shared = _sharing(config, wrapper)
    named = wrapper.settings_dict
    key = (
        repr(config),
        shared,
        named.get("NAME"),
        named.get("HOST"),
        named.get("PORT"),
        named.get("USER"),
    )
    with _lock:
        made = _current
        if made is not None and made.key == key:
            return made.brama
        if made is not None:
            _dispose(made)
            _current = None
        brama = _build(config, shared, wrapper)
        _current = _Made(key, brama, shared)
        return brama


def _sharing(config: Config, wrapper: Any) -> bool:
    shared = config.share_connection
    if shared is None:
        shared = under_test_runner()
    return shared or database.in_memory(wrapper)  # only Django's connection reaches it


def _build(config: Config, shared: bool, wrapper: Any, **overrides: Any) -> Brama:
    options = {**config.options, **overrides}
    if shared:
        engine = database.shared_engine(config.database)
        brama = Brama(engine, connections=config.connections, **options)
        brama._first_uses = _Forgetful()
        return brama
    return Brama(database.database_url(wrapper), connections=config.connections, **options)


def new_brama(**overrides: Any) -> Brama:
    """A new :class:`~brama_sql.Brama` made from the settings as :func:`get_brama` makes it,
    with ``overrides`` of its ``OPTIONS``; the caller disposes of it (``manage.py brama``)."""
    config = read_config()
    wrapper = connections[config.database]
    return _build(config, _sharing(config, wrapper), wrapper, **overrides)


def _dispose(made: _Made) -> None:
    with contextlib.suppress(BramaError):  # a database gone away: nothing left to close
        made.brama.dispose()


def reset_brama() -> None:
    """Forget the instance and close its pooled connections: the next :func:`get_brama`
    makes a new one from the settings. Called when ``BRAMA_SQL`` or ``DATABASES`` change."""
    global _current
    with _lock:
        made, _current = _current, None
    if made is not None:
        _dispose(made)
