"""The built wheel carries the migrations, and ``migrate()`` works from the installed files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import json, sys
import brama_sql
from brama_sql import Brama
from brama_sql.migration import script_location
brama = Brama(sys.argv[1])
brama.migrate()
brama.register("api")
print(json.dumps({"package": brama_sql.__file__, "scripts": str(script_location()),
                  "state": brama.status("api").state.value}))
"""


def test_wheel_ships_migrations_and_migrates_from_them(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--quiet",
            "--wheel-dir",
            str(tmp_path / "dist"),
            str(ROOT),
        ],
        check=True,
    )
    (wheel,) = (tmp_path / "dist").glob("brama_sql-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        archive.extractall(tmp_path / "site")
    assert "brama_sql/migrations/env.py" in names
    assert "brama_sql/py.typed" in names
    assert any(name.startswith("brama_sql/migrations/versions/0001") for name in names)

    environment = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    url = f"sqlite:///{tmp_path / 'brama.db'}"
    result = subprocess.run(
        [sys.executable, "-c", PROBE, url],
        cwd=tmp_path,
        env=environment,
        check=True,
        capture_output=True,
        text=True,
    )
    found = json.loads(result.stdout)
    site = str(tmp_path / "site")
    assert found["package"].startswith(site)
    assert found["scripts"].startswith(site)
    assert found["state"] == "unknown"
