"""docs/flask.md from an empty project: its ``<!-- file: NAME -->`` blocks are written into an
empty directory, its ``<!-- shell -->`` blocks run there line by line (each must succeed) and
its ``<!-- check -->`` Python blocks run there, in page order."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from brama_sql import Brama, Kind, State

PAGE = Path(__file__).resolve().parents[2] / "docs" / "flask.md"
BLOCK = re.compile(
    r"<!-- (?P<what>file: [\w.]+|shell|check) -->\s*\n```\w+\n(?P<body>.*?)\n```", re.S
)


def test_the_flask_page_runs_from_an_empty_project(tmp_path: Path) -> None:
    blocks = [(match["what"], match["body"]) for match in BLOCK.finditer(PAGE.read_text())]
    assert [what for what, _ in blocks] == ["file: shop.py", "shell", "check", "shell"]
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    env.pop("FLASK_APP", None)
    for what, body in blocks:
        if what.startswith("file: "):
            (tmp_path / what.removeprefix("file: ")).write_text(body + "\n")
        elif what == "shell":
            for line in body.splitlines():
                done = subprocess.run(
                    line, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True
                )
                assert done.returncode == 0, f"{line}: {done.stdout}{done.stderr}"
        else:
            done = subprocess.run(
                [sys.executable, "-c", body], cwd=tmp_path, env=env, capture_output=True, text=True
            )
            assert done.returncode == 0, done.stderr
    database = tmp_path / "instance" / "brama.db"
    brama = Brama(f"sqlite:///{database}")
    moves = [(e.from_state, e.to_state) for e in brama.events() if e.kind is Kind.TRANSITION]
    brama.dispose()
    assert moves == [(State.UNKNOWN, State.CLOSED), (State.CLOSED, State.OPEN)]


@pytest.mark.parametrize("page", ["flask.md", "status-page.md"])
def test_the_pages_are_linked_from_the_index(page: str) -> None:
    assert f"]({page})" in (PAGE.parent / "index.md").read_text()
