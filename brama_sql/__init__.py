"""brama_sql: circuit breakers whose state and event log live in SQL, shared by every process."""

from typing import TYPE_CHECKING, Any

from brama_sql.brama import EVERY_SCOPE, Brama
from brama_sql.circuit import Cause, Kind, State
from brama_sql.cleaner import Cleaner
from brama_sql.errors import (
    AlreadyRegisteredError,
    ArgumentTypeError,
    BramaDatabaseError,
    BramaError,
    CircuitOpenError,
    InvalidArgumentError,
    NotRegisteredError,
    ReportOutcomeUnknownError,
    SchemaError,
)
from brama_sql.guard import Guard
from brama_sql.listeners import Listener
from brama_sql.permit import Permit
from brama_sql.policies import Policies
from brama_sql.records import ConnectionReport, ConnectionStatus, Event, Report, Transition
from brama_sql.status_page import status_page_data, status_page_html

if TYPE_CHECKING:
    from brama_sql.async_brama import AsyncBrama
    from brama_sql.async_cleaner import AsyncCleaner
    from brama_sql.async_guard import AsyncGuard, AsyncPermit

_ASYNC_NAMES = {
    "AsyncBrama": "brama_sql.async_brama",
    "AsyncCleaner": "brama_sql.async_cleaner",
    "AsyncGuard": "brama_sql.async_guard",
    "AsyncPermit": "brama_sql.async_guard",
}
"""The asyncio API, imported on first use: it needs SQLAlchemy's asyncio extension (greenlet),
which only the ``async`` extra installs."""


def __getattr__(name: str) -> Any:
    module = _ASYNC_NAMES.get(name)
    if module is None:
        raise AttributeError(f"module 'brama_sql' has no attribute {name!r}")
    import importlib

    try:
        value = getattr(importlib.import_module(module), name)
    except ImportError as error:
        raise ImportError(
            f"brama_sql.{name} needs SQLAlchemy's asyncio support and an asyncio driver: "
            f"pip install 'brama_sql[async]' ({error})"
        ) from error
    globals()[name] = value
    return value


__all__ = [
    "EVERY_SCOPE",
    "AlreadyRegisteredError",
    "ArgumentTypeError",
    "AsyncBrama",
    "AsyncCleaner",
    "AsyncGuard",
    "AsyncPermit",
    "Brama",
    "BramaDatabaseError",
    "BramaError",
    "Cause",
    "CircuitOpenError",
    "Cleaner",
    "ConnectionReport",
    "ConnectionStatus",
    "Event",
    "Guard",
    "InvalidArgumentError",
    "Kind",
    "Listener",
    "NotRegisteredError",
    "Permit",
    "Policies",
    "Report",
    "ReportOutcomeUnknownError",
    "SchemaError",
    "State",
    "Transition",
    "status_page_data",
    "status_page_html",
]
