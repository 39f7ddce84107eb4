"""docs/django.md is followed from an empty project: its ``<!-- django: run -->`` shell blocks
run in a temporary folder, in page order, with its ``<!-- django: write PATH -->`` and
``<!-- django: append PATH -->`` Python blocks written into the project as they come."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("django")

PAGE = Path(__file__).resolve().parents[2] / "docs" / "django.md"
STEP = re.compile(
    r"<!-- django: (?P<action>run|write|append)(?: (?P<path>\S+))? -->\s*\n"
    r"```(?:sh|python)\n(?P<body>.*?)\n```",
    re.S,
)


def test_the_page_runs_from_an_empty_project(tmp_path: Path) -> None:
    steps = list(STEP.finditer(PAGE.read_text(encoding="utf-8")))
    assert [step["action"] for step in steps].count("run") >= 3
    binaries = str(Path(sys.executable).parent)
    environment = {**os.environ, "PATH": f"{binaries}{os.pathsep}{os.environ['PATH']}"}
    environment.pop("DJANGO_SETTINGS_MODULE", None)
    outputs = []
    for step in steps:
        body = step["body"]
        if step["action"] == "run":
            for line in body.splitlines():
                command = shlex.split(line)
                if command[0] == "python":
                    command[0] = sys.executable
                done = subprocess.run(
                    command,
                    cwd=tmp_path,
                    env=environment,
                    capture_output=True,
                    text=True,
                    timeout=120,
                )
                assert done.returncode == 0, f"{line}\n{done.stdout}{done.stderr}"
                outputs.append(done.stdout + done.stderr)
            continue
        target = tmp_path / step["path"]
        if step["action"] == "append":
            target.write_text(target.read_text() + "\n" + body + "\n")
        else:
            target.write_text(body + "\n")
    joined = "\n".join(outputs)
    assert "Applying brama_sql.0001_initial... OK" in joined
    assert "No connections registered." in joined
    assert "Ran 2 tests" in joined and "\nOK" in joined
