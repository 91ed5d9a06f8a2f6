"""Commands that run servers: `serve`, `demo`, `settings`."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

import sqlalchemy as sa
import typer
from rich.console import Console
from rich.table import Table

from cascade_server.artifacts.registry import ReleaseRegistry
from cascade_server.cli.common import console, load_settings, migrated_engine
from cascade_server.offline.demo_data import DemoDataConfig, floor_to_hour, generate, is_empty, load
from cascade_server.settings import EventLoop, ServiceName, Settings
from cascade_server.storage import migrations
from cascade_server.storage.database import database_url, make_engine


class ServeTarget(StrEnum):
    """What `cascade serve` runs."""

    ALL = "all"
    BLENDING = "blending"
    RETRIEVAL = "retrieval"
    RANKING = "ranking"
    CATALOG = "catalog"


def serve(
    target: Annotated[
        ServeTarget,
        typer.Argument(help="The server to run, or `all` for the four, each its own process."),
    ],
) -> None:
    """Run gRPC servers until Ctrl-C or SIGTERM (in-flight calls are drained first).

    Ports: blending 50051, retrieval 50052, ranking 50053, catalog 50054
    (`CASCADE_<NAME>_PORT`). The database must be migrated (`cascade db upgrade`).
    Retrieval and ranking serve the active release (`cascade release list`) and the
    baseline until one is published.
    """
    settings = load_settings(target.value)
    if target is ServeTarget.ALL:
        raise typer.Exit(serve_all(settings))
    from cascade_server.rpc.app import build_server

    service = ServiceName(target.value)
    with migrated_engine(settings, pool_size=settings.workers) as engine:

        async def run() -> None:
            await build_server(settings, service, engine).serve_until_signalled()

        run_on_loop(settings.event_loop, run())


def run_on_loop(kind: EventLoop, main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` to its end on a new event loop of ``kind``."""
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    if kind is EventLoop.UVLOOP:
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main)


def demo(
    seed: Annotated[int, typer.Option(help="Seed of the demo data generator.")] = 42,
) -> None:
    """Set up and serve a demo: migrate, load demo data if the database is empty, serve all.

    With no release published yet, `cascade train all` also runs beside the servers:
    they serve the baseline at once and swap the trained release in when it is
    published (a few minutes; progress is shown).
    """
    settings = load_settings("demo")
    with database_url(settings) as url:
        migrations.upgrade(url)
        engine = make_engine(url)
        try:
            config = DemoDataConfig(seed=seed, end=floor_to_hour(datetime.now(UTC)))
            load_demo_data(engine, config, if_empty=True)
            published = ReleaseRegistry(engine, settings.home / "releases").active() is not None
        finally:
            engine.dispose()
        jobs = [] if published else [["train", "all"]]
        if jobs:
            console.print("no release yet: training one beside the servers (cascade train all)")
        raise typer.Exit(serve_all(settings, url=url, jobs=jobs))


def show_settings() -> None:
    """Print every setting: its environment variable, current value and meaning."""
    settings = Settings()
    table = Table("variable", "value", "meaning")
    for name, field in Settings.model_fields.items():
        value = getattr(settings, name)
        if name == "database_url" and value:
            value = sa.engine.make_url(value).render_as_string(hide_password=True)
        table.add_row(f"CASCADE_{name.upper()}", str(value), field.description or "")
    Console().print(table)


def serve_all(
    settings: Settings, *, url: str | None = None, jobs: Sequence[Sequence[str]] = ()
) -> int:
    """Run the four servers as supervised processes sharing one database URL (and ``jobs``,
    one-off ``cascade`` commands, beside them)."""
    from cascade_server.supervisor import Supervisor

    if url is None:
        with database_url(settings) as embedded_or_external:
            return serve_all(settings, url=embedded_or_external, jobs=jobs)
    engine = make_engine(url, pool_size=1)
    try:
        migrations.require_current(engine)
    finally:
        engine.dispose()
    env = {**os.environ, "CASCADE_DATABASE_URL": url}
    console.print(
        f"serving: blending {settings.host}:{settings.blending_port} (front door), "
        f"retrieval :{settings.retrieval_port}, ranking :{settings.ranking_port}, "
        f"catalog :{settings.catalog_port} — Ctrl-C stops"
    )
    processes = {service: settings.processes(service) for service in ServiceName}
    return Supervisor(env=env, grace_s=settings.grace_seconds, jobs=jobs, processes=processes).run()


def load_demo_data(engine: sa.Engine, config: DemoDataConfig, *, if_empty: bool) -> None:
    """Generate and load demo data (or, with ``if_empty``, skip a database that has data)."""
    if if_empty and not is_empty(engine):
        console.print("database already holds data; not loading demo data")
        return
    console.print(
        f"generating demo data: {config.users:,} users, {config.items:,} items, "
        f"{config.events:,} events (seed {config.seed})"
    )
    result = load(engine, generate(config), progress=True)
    console.print(f"loaded {result}")
