"""Commands that build and ship models: `train`, `build-index`, `release`, `evaluate`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import sqlalchemy as sa
import typer
from rich.console import Console
from rich.table import Table

from cascade_server.artifacts.registry import ReleaseRegistry
from cascade_server.cli.common import console, load_settings, migrated_engine, progress_bars
from cascade_server.offline.index import IndexConfig
from cascade_server.offline.train import build_item_index, publish, train_retrieval
from cascade_server.offline.two_tower import TwoTowerConfig
from cascade_server.settings import Settings

train_app = typer.Typer(help="Train models into the current build.", no_args_is_help=True)
release_app = typer.Typer(
    help="Publish, list, activate and roll back releases.", no_args_is_help=True
)

BuildDir = Annotated[
    Path | None,
    typer.Option(help="The build directory; default: CASCADE_HOME/build.", show_default=False),
]


def _build_dir(settings: Settings, build_dir: Path | None) -> Path:
    return build_dir or settings.home / "build"


def _registry(settings: Settings, engine: sa.Engine) -> ReleaseRegistry:
    return ReleaseRegistry(engine, settings.home / "releases")


@train_app.command("retrieval")
def train_retrieval_command(
    epochs: Annotated[int, typer.Option(min=1, help="Passes over the training pairs.")] = 8,
    dim: Annotated[int, typer.Option(min=8, help="Embedding dimensions.")] = 64,
    build_dir: BuildDir = None,
) -> None:
    """Start a build: train the two-tower model on the engagement data in the database.

    Exports a SavedModel with `query` and `candidate` signatures and every item's
    embedding; `cascade build-index` then indexes them.
    """
    settings = load_settings()
    config = TwoTowerConfig(epochs=epochs, embedding_dim=dim)
    with migrated_engine(settings) as engine, progress_bars() as progress:
        build = train_retrieval(engine, _build_dir(settings, build_dir), config, progress)
    console.print(f"two-tower model trained into {build.path}")


@train_app.command("all")
def train_all_command(
    epochs: Annotated[int, typer.Option(min=1, help="Two-tower passes over the data.")] = 8,
    publish_release: Annotated[
        bool, typer.Option("--publish/--no-publish", help="Publish the build when done.")
    ] = True,
    build_dir: BuildDir = None,
) -> None:
    """Train everything on the data in the database, evaluate, and publish one release."""
    settings = load_settings()
    path = _build_dir(settings, build_dir)
    with migrated_engine(settings) as engine:
        with progress_bars() as progress:
            train_retrieval(engine, path, TwoTowerConfig(epochs=epochs), progress)
            report = build_item_index(engine, path, IndexConfig())
        console.print(f"index: {report.items:,} items, {report.recall_at_k}")
        if publish_release:
            manifest = publish(path, _registry(settings, engine))
            console.print(f"published and activated release {manifest.release_id}")


def build_index_command(
    trees: Annotated[int, typer.Option(min=1, help="Annoy trees (more: better recall).")] = 50,
    search_k: Annotated[
        int, typer.Option(min=0, help="Nodes searched per query; 0: Annoy's default.")
    ] = 0,
    build_dir: BuildDir = None,
) -> None:
    """Index the build's item embeddings with Annoy; report recall@K against exact search."""
    settings = load_settings()
    with migrated_engine(settings) as engine:
        report = build_item_index(
            engine, _build_dir(settings, build_dir), IndexConfig(n_trees=trees, search_k=search_k)
        )
    table = Table("index", "value")
    table.add_row("items", f"{report.items:,}")
    table.add_row("trees", str(report.n_trees))
    for name, value in report.recall_at_k.items():
        table.add_row(name, f"{value:.4f}")
    table.add_row("seconds", f"{report.build_seconds:.1f}")
    Console().print(table)


@release_app.command("publish")
def release_publish(build_dir: BuildDir = None) -> None:
    """Publish the build as a release and make it active (servers swap it in)."""
    settings = load_settings()
    with migrated_engine(settings) as engine:
        manifest = publish(_build_dir(settings, build_dir), _registry(settings, engine))
    console.print(f"published and activated release {manifest.release_id}")


@release_app.command("list")
def release_list() -> None:
    """Every release, newest first, with its status and offline metrics."""
    settings = load_settings()
    with migrated_engine(settings) as engine:
        rows = _registry(settings, engine).list()
    table = Table("release", "status", "created", "activated", "metrics")
    for row in rows:
        table.add_row(
            row.release_id,
            row.status,
            f"{row.created_at:%Y-%m-%d %H:%M:%S}",
            f"{row.activated_at:%Y-%m-%d %H:%M:%S}" if row.activated_at else "",
            ", ".join(f"{k}" for k in row.metrics),
        )
    Console().print(table)


@release_app.command("activate")
def release_activate(
    release_id: Annotated[str, typer.Argument(help="The release to serve.")],
) -> None:
    """Make a published release active again, after checking its files."""
    settings = load_settings()
    with migrated_engine(settings) as engine:
        _registry(settings, engine).activate(release_id)
    console.print(f"release {release_id} is active")


@release_app.command("rollback")
def release_rollback() -> None:
    """Re-activate the release that was active before the current one."""
    settings = load_settings()
    with migrated_engine(settings) as engine:
        manifest = _registry(settings, engine).rollback()
    console.print(f"rolled back to release {manifest.release_id}")
