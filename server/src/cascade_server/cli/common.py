"""What every command shares: settings read once, the console, the database, progress bars."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from cascade_server.logs import configure_logging
from cascade_server.settings import Settings
from cascade_server.storage import migrations
from cascade_server.storage.database import database_url, make_engine

console = Console(stderr=True, soft_wrap=True)
"""Messages for the person at the terminal (stderr; stdout stays for data)."""


def load_settings(service: str = "cli") -> Settings:
    """The settings, read once from the environment, with logging configured."""
    settings = Settings()
    configure_logging(settings, service=service)
    return settings


@contextmanager
def migrated_engine(settings: Settings, pool_size: int = 2) -> Iterator[sa.Engine]:
    """An engine on the configured database, which must be migrated to head."""
    with database_url(settings) as url:
        engine = make_engine(url, pool_size=pool_size)
        try:
            migrations.require_current(engine)
            yield engine
        finally:
            engine.dispose()


@contextmanager
def progress_bars() -> Iterator[Callable[[str, float], None]]:
    """A callback ``(step, fraction done)`` that draws one bar per step on stderr."""
    with Progress(
        TextColumn("{task.description:<14}"),
        BarColumn(),
        TextColumn("{task.percentage:>5.1f}%"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        tasks: dict[str, TaskID] = {}

        def report(step: str, fraction: float) -> None:
            if step not in tasks:
                tasks[step] = progress.add_task(step, total=1.0)
            progress.update(tasks[step], completed=min(1.0, fraction))

        yield report
