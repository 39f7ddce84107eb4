"""brama_sql: circuit breakers whose state and event log live in SQL, shared by every process."""

from brama_sql.async_brama import AsyncBrama
from brama_sql.async_cleaner import AsyncCleaner
from brama_sql.async_guard import AsyncGuard, AsyncPermit
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
from brama_sql.records import ConnectionStatus, Event, Transition

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
    "ConnectionStatus",
    "Event",
    "Guard",
    "InvalidArgumentError",
    "Kind",
    "Listener",
    "NotRegisteredError",
    "Permit",
    "ReportOutcomeUnknownError",
    "SchemaError",
    "State",
    "Transition",
]
