"""The exceptions brama_sql raises. Every one is a :class:`BramaError`."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from brama_sql.records import ConnectionStatus


class BramaError(Exception):
    """Base class of every error brama_sql raises."""


class InvalidArgumentError(BramaError, ValueError):
    """An argument has the right type but a value brama_sql cannot accept."""

    def __init__(self, message: str, argument: str | None = None) -> None:
        self.argument = argument
        """The name of the argument, where the caller may want to point at it."""
        super().__init__(message)


class ArgumentTypeError(BramaError, TypeError):
    """An argument has the wrong type."""


class NotRegisteredError(BramaError, LookupError):
    """The connection ``(identifier, scope)`` is not registered."""

    def __init__(self, identifier: str, scope: str | None) -> None:
        self.identifier = identifier
        self.scope = scope
        super().__init__(f"connection {describe(identifier, scope)} is not registered")


class AlreadyRegisteredError(BramaError):
    """``register`` was called for a connection that already exists."""

    def __init__(self, identifier: str, scope: str | None) -> None:
        self.identifier = identifier
        self.scope = scope
        super().__init__(f"connection {describe(identifier, scope)} is already registered")


class CircuitOpenError(BramaError):
    """A guarded call was refused: the circuit of ``(identifier, scope)`` admits no call now
    (it is open, or half-open with every probe permit taken). The guarded block, or the
    protected function, did not run."""

    def __init__(
        self,
        identifier: str,
        scope: str | None,
        status: ConnectionStatus | None,
        retry_after: float | None,
    ) -> None:
        self.identifier = identifier
        self.scope = scope
        self.status = status
        """The connection's status, read right after the refusal; ``None`` when the database
        could not be read (``on_db_error="deny"`` refused the call)."""
        self.retry_after = retry_after
        """Seconds until the circuit next admits a probe: ``opened_at + expiry`` minus now for
        an open circuit, ``0.0`` when it admitted calls again by the time its status was read;
        ``None`` when unknown (half-open with every permit taken, or no status)."""
        if status is None:
            state = "the database could not be read (on_db_error='deny')"
        else:
            state = f"it is {status.state}"
        wait = "" if retry_after is None else f"; retry after {retry_after:g} s"
        super().__init__(
            f"circuit of {describe(identifier, scope)} refused the call: {state}{wait}"
        )

    def __reduce__(self) -> tuple[type[CircuitOpenError], tuple[object, ...]]:
        return (type(self), (self.identifier, self.scope, self.status, self.retry_after))


class SchemaError(BramaError):
    """The brama_sql tables are missing or behind the installed version."""


class BramaDatabaseError(BramaError):
    """The database failed during an operation (unreachable, timed out, went away)."""

    def __init__(self, operation: str, cause: BaseException) -> None:
        self.operation = operation
        super().__init__(f"brama_sql {operation}() failed: database error: {cause}")


class ReportOutcomeUnknownError(BramaDatabaseError):
    """The database stopped answering while a change was being committed, and stayed
    unreachable for the rest of the call's time bound: the change may or may not have been
    committed. (When the database answers again within the bound, brama_sql finds out and
    never raises this.)"""

    def __init__(self, operation: str, cause: BaseException) -> None:
        super().__init__(operation, cause)
        self.args = (
            f"brama_sql {operation}() outcome unknown: the database went away while committing "
            f"and did not come back within the call's time bound: {cause}",
        )


def describe(identifier: str, scope: str | None) -> str:
    """A human-readable name of a connection for messages."""
    return f"{identifier!r}" if scope is None else f"{identifier!r} in scope {scope!r}"
