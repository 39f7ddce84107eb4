"""Declared connections: the options a :class:`~brama_sql.Brama` was told a connection has,
used to register it on first use (also after :meth:`~brama_sql.Brama.cleanup` removed it)
and compared once per process with what the database stores."""

from __future__ import annotations

import threading

from brama_sql.options import Registration
from brama_sql.rows import Identity


class Declarations:
    """The declared connections of one :class:`~brama_sql.Brama`, by identity.

    A declaration is configuration, not state: the circuits stay in the database. What is kept
    per process is only whether this process has already compared a declaration with the
    stored options (:meth:`pending`), so that it does so once.
    """

    def __init__(self) -> None:
        self._declared: dict[Identity, Registration] = {}
        self._compared: set[Identity] = set()
        self._lock = threading.Lock()

    def declare(self, identity: Identity, registration: Registration) -> None:
        """Declare (or declare anew) a connection; it will be compared again on next use."""
        with self._lock:
            self._declared[identity] = registration
            self._compared.discard(identity)

    def get(self, identity: Identity) -> Registration | None:
        """The declared options of ``identity``, or ``None`` when it was not declared."""
        return self._declared.get(identity)

    def pending(self, identity: Identity) -> Registration | None:
        """The declared options of ``identity`` if this process has not compared them with the
        stored ones yet, else ``None``."""
        if identity in self._compared:
            return None
        return self._declared.get(identity)

    def compared(self, identity: Identity, registration: Registration) -> None:
        """Note that ``registration`` was compared with the stored options (unless it was
        declared anew meanwhile)."""
        with self._lock:
            if self._declared.get(identity) is registration:
                self._compared.add(identity)
