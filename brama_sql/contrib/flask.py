"""The Flask extension: ``BramaSQL(app)`` or ``BramaSQL()`` + ``init_app(app)``.

Each app gets its own :class:`~brama_sql.Brama`, made on its first use from the app's config
(``BRAMA_SQL_*`` keys over the options given to :class:`BramaSQL`) and kept in
``app.extensions["brama_sql"]`` (a :class:`BramaSQLState`); the extension object stores no app,
so one extension serves several apps in one process (the factory pattern). A refused call
(:class:`~brama_sql.CircuitOpenError` reaching Flask) becomes an HTTP 503 with ``Retry-After``;
``flask brama ...`` runs the ``brama-sql`` commands on the app's database; and
:meth:`BramaSQL.status_blueprint` serves the status page. Install with ``brama_sql[flask]``.
"""

from __future__ import annotations

import functools
import inspect
import logging
import math
import os
import threading
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from flask import Blueprint, Flask, Response, current_app, jsonify, url_for
from flask.cli import AppGroup, with_appcontext
from flask.typing import ResponseReturnValue
from sqlalchemy.engine import URL, Engine
from werkzeug.exceptions import HTTPException, ServiceUnavailable

from brama_sql import cli
from brama_sql.brama import Brama
from brama_sql.errors import ArgumentTypeError, CircuitOpenError, InvalidArgumentError
from brama_sql.guard import Exclusion, Guard
from brama_sql.status_page import status_page_data, status_page_html
from brama_sql.validation import POLICY_CHECKS

__all__ = ["CONFIG_PREFIX", "BramaSQL", "BramaSQLState"]

logger = logging.getLogger("brama_sql")

F = TypeVar("F", bound=Callable[..., Any])

EXTENSION_KEY = "brama_sql"
"""The key of the app's :class:`BramaSQLState` in ``app.extensions``."""
CONFIG_PREFIX = "BRAMA_SQL_"
DATABASE_OPTION = "database_uri"
"""The option (and, upper-cased after :data:`CONFIG_PREFIX`, the config key) of the database:
a URL, an SQLAlchemy URL or an Engine."""
BRAMA_OPTIONS = frozenset(
    name
    for name, parameter in inspect.signature(Brama.__init__).parameters.items()
    if parameter.kind is inspect.Parameter.KEYWORD_ONLY
) | frozenset(POLICY_CHECKS)
"""The keyword options of :class:`Brama`, its policy options included (``expiry_strategy``,
``failure_rate_threshold``, ...); each is also the config key ``BRAMA_SQL_<NAME>``."""
OPTIONS = BRAMA_OPTIONS | {DATABASE_OPTION}
SQLITE_FILE = "brama.db"
"""The SQLite file in the app's instance folder used when nothing else names a database."""


class BramaSQLState:
    """What the extension keeps per app, in ``app.extensions["brama_sql"]``: the options read
    from the config and the app's :class:`Brama`, made on first use."""

    def __init__(self, extension: BramaSQL, app: Flask, options: dict[str, Any]) -> None:
        self.extension = extension
        self.options = options
        """The merged options: the extension's, overridden by the app's ``BRAMA_SQL_*`` keys."""
        self._app = weakref.ref(app)
        self._brama: Brama | None = None
        self._lock = threading.Lock()

    @property
    def brama(self) -> Brama:
        """The app's :class:`Brama`, made on first use (thread-safe)."""
        if self._brama is None:
            with self._lock:
                if self._brama is None:
                    target, options = self.database_and_options()
                    self._brama = Brama(target, **options)
        return self._brama

    def database_and_options(self) -> tuple[str | URL | Engine, dict[str, Any]]:
        """The database the app's :class:`Brama` uses (``BRAMA_SQL_DATABASE_URI``; else the
        Flask-SQLAlchemy engine when the app has one; else ``brama.db`` in the instance
        folder) and its other options."""
        app = self._app()
        if app is None:  # pragma: no cover - the app owns this object
            raise RuntimeError("the Flask app of this brama_sql state no longer exists")
        options = {name: value for name, value in self.options.items() if name in BRAMA_OPTIONS}
        database = self.options.get(DATABASE_OPTION)
        if database is not None:
            if not isinstance(database, (str, URL, Engine)):
                raise ArgumentTypeError(
                    f"{CONFIG_PREFIX}DATABASE_URI must be a database URL or an SQLAlchemy "
                    f"Engine, not {type(database).__name__}"
                )
            return database, options
        sqlalchemy = app.extensions.get("sqlalchemy")
        if sqlalchemy is not None:
            with app.app_context():
                engine: Engine = sqlalchemy.engine
            return engine, options
        Path(app.instance_path).mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{os.path.join(app.instance_path, SQLITE_FILE)}", options

    def dispose(self) -> None:
        """Close the pooled connections of the app's :class:`Brama`, if it was made."""
        if self._brama is not None:
            self._brama.dispose()


class BramaSQL:
    """brama_sql for Flask apps: ``ext = BramaSQL(app, **options)``, or ``ext = BramaSQL(
    **options)`` and later ``ext.init_app(app)`` for each app.

    ``options`` are the keyword options of :class:`~brama_sql.Brama` (``failure_threshold``,
    ``expiry``, ``on_db_error``, ``connections``, ...) and ``database_uri``; they are defaults
    that the app's config keys ``BRAMA_SQL_<OPTION>`` override (``BRAMA_SQL_DATABASE_URI``,
    ``BRAMA_SQL_FAILURE_THRESHOLD``, ``BRAMA_SQL_CONNECTIONS``, ...). ``BRAMA_SQL_CONNECTIONS``
    (``{identifier: options}``) are declared: each is registered by its first use, never reset.
    """

    def __init__(self, app: Flask | None = None, **options: Any) -> None:
        unknown = sorted(set(options) - OPTIONS)
        if unknown:
            raise InvalidArgumentError(
                f"unknown BramaSQL option(s) {', '.join(unknown)}; the options are "
                f"{', '.join(sorted(OPTIONS))}"
            )
        self.options = dict(options)
        """The defaults given to the constructor."""
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Set the extension up on ``app``: its state in ``app.extensions["brama_sql"]``, the
        503 handler of refused calls and the ``flask brama`` commands. Touches no database."""
        existing = app.extensions.get(EXTENSION_KEY)
        if existing is not None and existing.extension is not self:
            raise InvalidArgumentError(
                "this app already has another BramaSQL extension (app.extensions['brama_sql'])"
            )
        merged = dict(self.options)
        for key, value in app.config.items():
            if not key.startswith(CONFIG_PREFIX):
                continue
            name = key[len(CONFIG_PREFIX) :].lower()
            if name in OPTIONS:
                merged[name] = value
            else:
                logger.warning(
                    "unknown config key %s ignored (brama_sql reads %s)",
                    key,
                    ", ".join(CONFIG_PREFIX + option.upper() for option in sorted(OPTIONS)),
                )
        if existing is not None:
            existing.dispose()  # set up again (new config): the old Brama's pool is closed
        app.extensions[EXTENSION_KEY] = BramaSQLState(self, app, merged)
        app.register_error_handler(CircuitOpenError, _refused)
        app.cli.add_command(_command_group())

    # -- the app's Brama --------------------------------------------------------------------

    def state(self, app: Flask | None = None) -> BramaSQLState:
        """The extension's state of ``app`` (default: the current app)."""
        chosen: Flask = current_app._get_current_object() if app is None else app  # type: ignore[attr-defined]
        state = chosen.extensions.get(EXTENSION_KEY)
        if not isinstance(state, BramaSQLState) or state.extension is not self:
            raise InvalidArgumentError(
                f"brama_sql is not set up on the Flask app {chosen.name!r}: call "
                "BramaSQL.init_app(app) first"
            )
        return state

    def get_brama(self, app: Flask | None = None) -> Brama:
        """The :class:`~brama_sql.Brama` of ``app`` (default: the current app)."""
        return self.state(app).brama

    @property
    def brama(self) -> Brama:
        """The :class:`~brama_sql.Brama` of the current app (needs an app context)."""
        return self.get_brama()

    # -- protecting calls -------------------------------------------------------------------

    def guard(self, identifier: str, **options: Any) -> Guard:
        """:meth:`Brama.guard <brama_sql.Brama.guard>` on the current app's ``Brama`` (same
        options). An ``HTTPException`` with a 4xx code (``abort(404)``) counts as neither
        success nor failure, beside what ``exclude`` names."""
        options["exclude"] = _with_client_errors(options.get("exclude"))
        return self.get_brama().guard(identifier, **options)

    def protect(self, identifier: str, **options: Any) -> Callable[[F], F]:
        """A decorator running each call of a view (or any function) in :meth:`guard` of the
        current app's ``Brama``: :meth:`Brama.protect <brama_sql.Brama.protect>`'s options
        (``scope``, ``register``, ``exclude``, ``failure_if``, ``fallback``, ...). A refused
        call raises :class:`~brama_sql.CircuitOpenError`, which becomes an HTTP 503 with
        ``Retry-After`` unless the caller handles it. 4xx ``HTTPException`` s are not failures.
        """
        options["exclude"] = _with_client_errors(options.get("exclude"))

        def decorate(function: F) -> F:
            if inspect.iscoroutinefunction(function) or inspect.isgeneratorfunction(function):
                raise ArgumentTypeError(
                    f"protect() needs a plain function, not {function.__qualname__!r} (a "
                    "coroutine or generator function)"
                )
            # This decoration's wrapper per Brama (one per app): each decoration has its own,
            # so one function protected under two identifiers reports to each.
            made: weakref.WeakKeyDictionary[Brama, Callable[..., Any]] = weakref.WeakKeyDictionary()

            @functools.wraps(function)
            def protected(*args: Any, **kwargs: Any) -> Any:
                brama = self.get_brama()
                wrapped = made.get(brama)
                if wrapped is None:
                    wrapped = made[brama] = brama.protect(identifier, **options)(function)
                return wrapped(*args, **kwargs)

            return protected  # type: ignore[return-value]

        return decorate

    # -- the status page --------------------------------------------------------------------

    def status_blueprint(
        self,
        authorize: Callable[[], object] | None = None,
        *,
        show_metadata: bool = False,
        name: str = "brama_sql_status",
    ) -> Blueprint:
        """A Blueprint serving the status page at ``/``, its JSON twin at ``/status.json``
        and, when ``prometheus_client`` is installed (extra ``prometheus``), the Prometheus
        metrics at ``/metrics``; register it with a ``url_prefix`` of your choice.

        ``authorize()`` is called in each request's context and must return true to let it
        see the page; otherwise the answer is 403. Without ``authorize`` every request is
        refused: pass ``authorize=lambda: True`` to make the page public on purpose.
        ``show_metadata`` shows the connections' metadata values (hidden by default).
        """
        if authorize is not None and not callable(authorize):
            raise ArgumentTypeError(f"authorize must be a callable, not {type(authorize).__name__}")
        if not isinstance(show_metadata, bool):
            raise ArgumentTypeError(
                f"show_metadata must be a bool, not {type(show_metadata).__name__}"
            )
        blueprint = Blueprint(name, __name__)
        extension = self

        @blueprint.before_request
        def check() -> Response | None:
            if authorize is None or not authorize():
                response = Response("Forbidden\n", status=403, mimetype="text/plain")
                response.headers["Cache-Control"] = "no-store"
                return response
            return None

        @blueprint.route("/")
        def page() -> Response:
            body = status_page_html(
                extension.get_brama(),
                show_metadata=show_metadata,
                json_url=url_for(f"{name}.data"),
            )
            response = Response(body, mimetype="text/html")
            return _no_store(response)

        @blueprint.route("/status.json")
        def data() -> Response:
            return _no_store(
                jsonify(status_page_data(extension.get_brama(), show_metadata=show_metadata))
            )

        try:
            from brama_sql.contrib.prometheus import metrics_exposition
        except ImportError:  # the prometheus extra is not installed: no /metrics
            return blueprint

        @blueprint.route("/metrics")
        def metrics() -> Response:
            body, content_type = metrics_exposition(extension.get_brama())
            response = Response(body, content_type=content_type)
            response.headers["Cache-Control"] = "no-store"
            return response

        return blueprint


def _no_store(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
    )
    return response


def _is_client_error(error: BaseException) -> bool:
    return isinstance(error, HTTPException) and error.code is not None and error.code < 500


def _with_client_errors(exclude: object) -> Callable[[BaseException], bool]:
    """``exclude`` (validated now) widened to 4xx ``HTTPException`` s."""
    given = Exclusion(exclude)
    return lambda error: _is_client_error(error) or given.excludes(error)


def _retry_after(error: CircuitOpenError) -> int:
    """The ``Retry-After`` seconds of a refusal: its ``retry_after`` rounded up, at least 1;
    1 when unknown (half-open with every probe permit taken, or the database unreadable)."""
    if error.retry_after is None:
        return 1
    return max(1, math.ceil(error.retry_after))


def _refused(error: CircuitOpenError) -> ResponseReturnValue:
    """The error handler of :class:`CircuitOpenError`: HTTP 503 with ``Retry-After``."""
    refusal = ServiceUnavailable(
        "A service this request needs is temporarily unavailable. Please retry later.",
        retry_after=_retry_after(error),
    )
    return refusal.get_response()


# -- flask brama ... --------------------------------------------------------------------------


class _AppRuntime(cli.Runtime):
    """The ``brama-sql`` commands' runtime on the current app's database and options."""

    def __init__(self, state: BramaSQLState) -> None:
        super().__init__()
        self.state = state

    def brama(self, ctx: click.Context, *, creates: bool = False, **options: Any) -> Brama:
        target, configured = self.state.database_and_options()
        merged = {**configured, **options}
        if isinstance(target, Engine):
            brama = Brama(target, **merged)
            ctx.call_on_close(brama.dispose)
            return brama
        if isinstance(target, URL):
            target = target.render_as_string(hide_password=False)
        self.url = target
        return super().brama(ctx, creates=creates, **merged)


EXCLUDED_COMMANDS = frozenset({"demo"})
"""``brama-sql`` commands ``flask brama`` leaves out (the demo writes its own circuits)."""


def _command_group() -> click.Group:
    """``flask brama``: every ``brama-sql`` command but the demo, on the app's database."""

    @click.group("brama", cls=_FlaskGroup)
    @with_appcontext
    def group() -> None:
        """brama_sql's circuits on this app's database (the brama-sql commands)."""
        ctx = click.get_current_context()
        extension_state = current_app.extensions.get(EXTENSION_KEY)
        if not isinstance(extension_state, BramaSQLState):
            raise click.ClickException("brama_sql is not set up on this app")
        ctx.obj = _AppRuntime(extension_state)

    for command_name, command in sorted(cli.main.commands.items()):
        if command_name not in EXCLUDED_COMMANDS:
            group.add_command(command, command_name)
    return group


class _FlaskGroup(cli._Group, AppGroup):
    """``brama-sql``'s error handling (one line, exit 1) in a Flask command group."""
