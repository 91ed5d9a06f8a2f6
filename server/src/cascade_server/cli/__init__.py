"""The ``cascade`` command line.

Every command reads its settings once from ``CASCADE_*`` environment variables (see
``cascade settings``); options given on the command line only choose what to do.
"""

from __future__ import annotations

import importlib

import typer

from cascade_server.cli.common import console
from cascade_server.errors import CascadeError

COMMANDS: dict[str, tuple[str, str, bool]] = {
    "serve": ("serving", "serve", False),
    "demo": ("serving", "demo", False),
    "settings": ("serving", "show_settings", False),
    "demo-data": ("data", "demo_data", False),
    "import": ("data", "import_data", False),
    "db": ("data", "db_app", True),
    "train": ("models", "train_app", True),
    "build-index": ("models", "build_index_command", False),
    "release": ("models", "release_app", True),
    "policy": ("policy", "policy_app", True),
    "evaluate": ("models", "evaluate_command", False),
    "auth": ("auth", "auth_app", True),
    "doctor": ("doctor", "doctor", False),
}
"""Every command: its module in this package, the function or sub-app, whether a group."""


def build_app(command: str = "") -> typer.Typer:
    """The command line; with ``command`` one of ``COMMANDS``, only that command is
    registered, so only its module is imported (the others' imports are most of a
    command's start-up CPU)."""
    app = typer.Typer(
        help=(
            "Cascade: a multi-stage recommendation backend served over gRPC.\n\n"
            "Quick start: `cascade demo` starts an embedded Postgres, loads demo data and "
            "serves. Settings come from CASCADE_* environment variables (`cascade settings`)."
        ),
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        rich_markup_mode="markdown",
    )
    app.callback()(_group)
    for name in [command] if command in COMMANDS else list(COMMANDS):
        module, attribute, group = COMMANDS[name]
        target = getattr(importlib.import_module(f"cascade_server.cli.{module}"), attribute)
        if group:
            app.add_typer(target, name=name)
        else:
            app.command(name)(target)
    return app


def _group() -> None:
    """Makes the app a group even with one command registered, so that the command's
    name is still read as a command."""


def main(command: str = "") -> None:
    """Entry point of the `cascade` script; domain errors become one clear line."""
    try:
        build_app(command)()
    except CascadeError as error:
        console.print(f"[bold red]error:[/] {error.message}")
        raise SystemExit(2) from None
