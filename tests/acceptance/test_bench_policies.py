"""The failure-rate benchmark's smoke test: ``python -m bench.policies --short`` on SQLite runs
and prints a document of the documented shape. The figures are not checked (a smoke run's
rounds are far too short)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_the_short_run_measures_both_reports_with_and_without_the_policy(tmp_path: Path) -> None:
    output = tmp_path / "policies.json"
    completed = subprocess.run(
        [
            *(sys.executable, "-m", "bench.policies", "--short"),
            *("--dialects", "sqlite", "--output", str(output)),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    document = json.loads(output.read_text(encoding="utf-8"))
    assert document["mode"] == "short" and document["events"] == 2_000
    results = document["results"]["sqlite"]
    assert set(results) == {"success", "failure"}
    for figures in results.values():
        assert figures["off_ops_per_s"] > 0 and figures["on_ops_per_s"] > 0
        assert figures["time_ratio"] > 0
    assert "time on/off" in completed.stderr
