"""`cascade auth`: bearer tokens for servers that check them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cascade_server.cli.common import console, load_settings
from cascade_server.errors import ConfigurationError
from cascade_server.security import Scope, add_token

auth_app = typer.Typer(
    help="Bearer tokens: servers given CASCADE_AUTH_TOKENS_FILE accept only the tokens it lists.",
    no_args_is_help=True,
)


@auth_app.command("add-token")
def add_token_command(
    name: Annotated[str, typer.Argument(help="Who the token is for, e.g. feed-service.")],
    scopes: Annotated[
        str, typer.Option(help="Comma-separated: read (queries), write (catalog writes).")
    ] = "read",
    file: Annotated[
        Path | None,
        typer.Option(help="The tokens file; default CASCADE_AUTH_TOKENS_FILE."),
    ] = None,
) -> None:
    """Make a random token, add its SHA-256 and scopes to the tokens file, print it once.

    The file keeps only the hash: store the printed token where its caller reads it
    (a secret store); servers load the file when they start.
    """
    path = file or load_settings().auth_tokens_file
    if path is None:
        raise ConfigurationError("name the tokens file: --file PATH or CASCADE_AUTH_TOKENS_FILE")
    try:
        wanted = frozenset(Scope(scope.strip()) for scope in scopes.split(",") if scope.strip())
    except ValueError as error:
        raise ConfigurationError(f"unknown scope in {scopes!r}: use read and/or write") from error
    if not wanted:
        raise ConfigurationError("give at least one scope: --scopes read or --scopes read,write")
    token = add_token(path, name, wanted)
    console.print(f"added token {name!r} ({', '.join(sorted(wanted))}) to {path}")
    typer.echo(token)
