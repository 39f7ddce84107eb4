"""The benchmark's smoke test: ``python -m bench --short`` on SQLite runs and writes a JSON file
of the documented shape. The figures are not checked (a smoke run's rounds are far too short).

Needs no server. The pybreaker contender needs Redis on 127.0.0.1:6379 (and the ``bench``
extra): without it the run skips that contender only, says why, and the test checks that it
did so.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
OPERATIONS = {"available", "success", "failure", "status", "guarded", "connections"}
TWINS = {"brama", "core", "driver"}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def short_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    """The JSON document and the printed tables of one short SQLite run."""
    output = tmp_path_factory.mktemp("bench") / "short.json"
    completed = subprocess.run(
        [sys.executable, "-m", "bench", "--short", "--dialects", "sqlite", "--output", str(output)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    return json.loads(output.read_text(encoding="utf-8")), completed.stdout


def test_the_document_names_the_machine_and_the_run(short_run: tuple[dict[str, Any], str]) -> None:
    document, _ = short_run
    assert document["format"] == 1
    assert document["mode"] == "short"
    machine = document["machine"]
    assert isinstance(machine["cpu_count"], int)
    assert machine["python"].count(".") == 2
    assert machine["packages"]["SQLAlchemy"]
    assert machine["packages"]["brama_sql"]
    assert document["servers"]["sqlite"] == machine["sqlite_library"]
    assert document["source"]["brama_sql_path"].endswith("brama_sql")
    assert document["plan"]["dialects"] == ["sqlite"]
    assert document["plan"]["processes"] == [1]
    assert document["skipped_dialects"] == []
    assert document["fleets"]["sqlite"]["connections"] == document["plan"]["fleet"]
    assert document["verified_connections"]["sqlite"] == 1 + document["plan"]["spread"]
    assert document["duration_s"] > 0


def test_every_operation_has_its_twins_and_ratios(short_run: tuple[dict[str, Any], str]) -> None:
    document, _ = short_run
    results = document["results"]
    rounds = document["plan"]["rounds"]
    assert {result["operation"] for result in results} == OPERATIONS
    assert {(r["operation"], r["layout"]) for r in results} >= {
        ("available", "hot"),
        ("available", "spread"),
        ("guarded", "spread"),
        ("connections", "fleet"),
    }
    pybreaker_skipped = any(skip["what"] == "pybreaker" for skip in document["skipped"])
    for result in results:
        assert result["dialect"] == "sqlite"
        assert result["processes"] == 1
        wanted = set(TWINS)
        extra = set()
        if result["operation"] == "guarded":
            wanted.add("brama-fast")
            if not pybreaker_skipped:
                wanted.add("pybreaker")
                extra.add("brama-fast/pybreaker")
        assert set(result["contenders"]) == wanted
        for figures in result["contenders"].values():
            assert len(figures["rounds_ops_per_s"]) == rounds
            assert figures["calls"] >= rounds
            assert figures["median_ops_per_s"] > 0
        assert set(result["ratios"]) == {f"brama/{name}" for name in wanted - {"brama"}} | extra
        assert all(math.isfinite(value) and value > 0 for value in result["ratios"].values())


def test_pybreaker_runs_or_is_skipped_with_a_reason(short_run: tuple[dict[str, Any], str]) -> None:
    document, tables = short_run
    skipped = [skip for skip in document["skipped"] if skip["what"] == "pybreaker"]
    if skipped:
        assert "Redis" in skipped[0]["reason"]
        assert "Skipped pybreaker" in tables
    else:
        assert document["servers"]["redis"]
        assert "pybreaker + Redis" in tables
        assert "guarded call: brama fast modes" in tables


def test_the_tables_are_printed(short_run: tuple[dict[str, Any], str]) -> None:
    _, tables = short_run
    assert tables.startswith("## Summary")
    assert "| available() |" in tables
    assert "## SQLite" in tables
