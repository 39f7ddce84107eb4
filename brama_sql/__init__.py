"""brama_sql: circuit breakers whose state and event log live in SQL, shared by every process."""

from brama_sql.brama import EVERY_SCOPE, Brama
from brama_sql.circuit import Cause, Kind, State
from brama_sql.cleaner import Cleaner
from brama_sql.errors import (
    AlreadyRegisteredError,
    ArgumentTypeError,
    BramaDatabaseError,
    BramaError,
    InvalidArgumentError,
    NotRegisteredError,
    ReportOutcomeUnknownError,
    SchemaError,
)
from brama_sql.records import ConnectionStatus, Event, Transition

__all__ = [
    "EVERY_SCOPE",
    "AlreadyRegisteredError",
    "ArgumentTypeError",
    "Brama",
    "BramaDatabaseError",
    "BramaError",
    "Cause",
    "Cleaner",
    "ConnectionStatus",
    "Event",
    "InvalidArgumentError",
    "Kind",
    "NotRegisteredError",
    "ReportOutcomeUnknownError",
    "SchemaError",
    "State",
    "Transition",
]
