"""``manage.py brama ...``: the ``brama-sql`` command line on the project's database.

Every ``brama-sql`` subcommand except ``demo`` is available with the same options
(``manage.py brama status``, ``events --json``, ``report --since 1h``, ``verify``,
``cleanup``, ``prune --older-than 30d``, ...); the database and the options come from the
``BRAMA_SQL`` setting instead of ``--url``.
"""

from __future__ import annotations

import argparse
from contextlib import redirect_stderr, redirect_stdout
from typing import Any, ClassVar

import click
from django.core.management.base import BaseCommand, CommandError, CommandParser

from brama_sql import cli
from brama_sql.brama import Brama

HIDDEN = frozenset({"demo"})
"""``brama-sql`` subcommands that make no sense on a project's database."""


class DjangoRuntime(cli.Runtime):
    """The command line's runtime with the project's Brama instead of one made from a URL."""

    def brama(self, ctx: click.Context, *, creates: bool = False, **options: Any) -> Brama:
        """A new Brama made from ``BRAMA_SQL`` (with ``options`` overriding its ``OPTIONS``),
        disposed when the command ends."""
        from brama_sql.contrib.django.runtime import new_brama

        made = new_brama(**options)
        ctx.call_on_close(made.dispose)
        return made


class Command(BaseCommand):
    """Run a ``brama-sql`` subcommand on the project's brama_sql database."""

    help = "brama_sql's command line on the project's database: " + ", ".join(
        sorted(name for name in cli.main.commands if name not in HIDDEN)
    )
    requires_system_checks: ClassVar[list[str]] = []

    def add_arguments(self, parser: CommandParser) -> None:
        """Everything after ``brama`` goes to the ``brama-sql`` command line."""
        parser.add_argument("command", nargs="?", help="status, events, report, verify, ...")
        parser.add_argument("arguments", nargs=argparse.REMAINDER)

    def handle(self, *args: Any, **options: Any) -> None:
        """Run the subcommand; its output goes to this command's stdout and stderr."""
        name = options.get("command")
        rest = list(options.get("arguments") or [])
        if not name or name in HIDDEN or name not in cli.main.commands:
            known = ", ".join(sorted(n for n in cli.main.commands if n not in HIDDEN))
            raise CommandError(f"choose a subcommand: {known}", returncode=2)
        if "--url" in rest or any(arg.startswith("--url=") for arg in rest):
            raise CommandError("the database comes from the BRAMA_SQL setting, not --url")
        with redirect_stdout(self.stdout._out), redirect_stderr(self.stderr._out):
            try:
                code = cli.main.main(
                    args=[name, *rest],
                    prog_name="manage.py brama",
                    obj=DjangoRuntime(),
                    standalone_mode=False,
                )
            except click.exceptions.Abort:
                raise CommandError("aborted") from None
            except click.ClickException as error:
                raise CommandError(error.format_message(), returncode=error.exit_code) from None
        if isinstance(code, int) and code != 0:
            raise CommandError(f"brama {name} exited with status {code}", returncode=code)
