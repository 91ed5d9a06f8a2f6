"""The ``cascade`` command line.

Every command reads its settings once from ``CASCADE_*`` environment variables (see
``cascade settings``); options given on the command line only choose what to do.
"""

from __future__ import annotations

import typer

from cascade_server.cli import auth, data, doctor, models, policy, serving
from cascade_server.cli.common import console
from cascade_server.errors import CascadeError

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
app.command()(serving.serve)
app.command()(serving.demo)
app.command("settings")(serving.show_settings)
app.command("demo-data")(data.demo_data)
app.command("import")(data.import_data)
app.add_typer(data.db_app, name="db")
app.add_typer(models.train_app, name="train")
app.command("build-index")(models.build_index_command)
app.add_typer(models.release_app, name="release")
app.add_typer(policy.policy_app, name="policy")
app.command("evaluate")(models.evaluate_command)
app.add_typer(auth.auth_app, name="auth")
app.command("doctor")(doctor.doctor)


def main() -> None:
    """Entry point of the `cascade` script; domain errors become one clear line."""
    try:
        app()
    except CascadeError as error:
        console.print(f"[bold red]error:[/] {error.message}")
        raise SystemExit(2) from None
