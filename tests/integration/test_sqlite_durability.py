"""SQLite durability: a commit of a brama_sql-built SQLite engine is on disk before it returns
(WAL with ``synchronous=FULL``), unless the URL opts into ``?synchronous=normal``."""

from __future__ import annotations

from pathlib import Path

import pytest

from brama_sql import Brama, InvalidArgumentError

FULL, NORMAL = 2, 1
"""What ``PRAGMA synchronous`` reads."""


def pragmas(brama: Brama) -> tuple[str, int]:
    """The journal mode and the synchronous level of a pooled connection of ``brama``."""
    with brama.engine.connect() as conn:
        journal = conn.exec_driver_sql("PRAGMA journal_mode").scalar_one()
        synchronous = conn.exec_driver_sql("PRAGMA synchronous").scalar_one()
    return journal, synchronous


def test_a_brama_built_sqlite_engine_is_durable_by_default(tmp_path: Path) -> None:
    brama = Brama(f"sqlite:///{tmp_path / 'brama.db'}")
    try:
        brama.migrate()
        brama.register("db")
        assert pragmas(brama) == ("wal", FULL)
    finally:
        brama.dispose()


@pytest.mark.parametrize(
    ("given", "level"), [("normal", NORMAL), ("NORMAL", NORMAL), ("full", FULL)]
)
def test_the_url_chooses_the_faster_mode(tmp_path: Path, given: str, level: int) -> None:
    brama = Brama(f"sqlite:///{tmp_path / 'brama.db'}?synchronous={given}")
    try:
        brama.migrate()
        brama.register("db")
        assert pragmas(brama) == ("wal", level)
        # The parameter is brama_sql's: the driver never sees it (it would warn, an error here).
        assert "synchronous" not in brama.engine.url.query
    finally:
        brama.dispose()


def test_an_unknown_synchronous_mode_is_refused_before_anything_is_created(tmp_path: Path) -> None:
    path = tmp_path / "brama.db"
    with pytest.raises(InvalidArgumentError, match="synchronous") as caught:
        Brama(f"sqlite:///{path}?synchronous=off")
    assert caught.value.argument == "url"
    assert not path.exists()
