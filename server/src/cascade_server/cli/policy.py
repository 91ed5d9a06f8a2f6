"""`cascade policy`: check a blending policy file, and put one in front of the live servers."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from cascade_server.artifacts.registry import ReleaseRegistry
from cascade_server.blending.policy import BlendingPolicies, SurfacePolicy
from cascade_server.cli.common import console, load_settings, migrated_engine
from cascade_server.offline.policy_release import publish_policy

policy_app = typer.Typer(
    help="Check blending policy files and publish them (a release with a new policy).",
    no_args_is_help=True,
)

PolicyPath = Annotated[Path, typer.Argument(help="A policy file (YAML or JSON).")]


@policy_app.command("check")
def check(path: PolicyPath) -> None:
    """Validate a policy file and show what it sets; exit code 2 with every problem if invalid."""
    policies = BlendingPolicies.load(path)
    _show(policies)
    console.print(f"{path}: valid (version {policies.version})")


@policy_app.command("publish")
def publish(
    path: PolicyPath,
    verify: Annotated[
        bool,
        typer.Option(
            "--verify",
            help="Hash the active release's model files first and refuse if any was altered "
            "(seconds of CPU at a million items; without it, only their presence and sizes "
            "are checked, and servers hash what they load).",
        ),
    ] = False,
) -> None:
    """Publish the active release's models with this policy file as a new active release.

    Running servers swap it in without a restart or a dropped request (within
    CASCADE_RELEASE_POLL_SECONDS); `cascade release rollback` restores the previous one.
    The model files are linked, not copied, and keep the active release's checksums.
    """
    policies = BlendingPolicies.load(path)
    settings = load_settings()
    with migrated_engine(settings) as engine:
        registry = ReleaseRegistry(engine, settings.home / "releases")
        manifest = publish_policy(registry, policies, verify=verify)
    console.print(
        f"published and activated release {manifest.release_id} with policy {policies.version}"
    )


def _show(policies: BlendingPolicies) -> None:
    fields = list(SurfacePolicy.model_fields)
    table = Table("field", *policies.config.surfaces)
    for name in fields:
        values = [getattr(p, name) for p in policies.config.surfaces.values()]
        table.add_row(name, *(_plain(v) for v in values))
    Console(stderr=True).print(table)
    for experiment in policies.config.experiments:
        variants = ", ".join(f"{v.name} ({v.weight:g})" for v in experiment.variants)
        console.print(f"experiment {experiment.name}: {variants}")


def _plain(value: object) -> str:
    if isinstance(value, frozenset | tuple | list):
        return ", ".join(sorted(str(v) for v in value)) or "-"
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items()) or "-"
    return str(value)
