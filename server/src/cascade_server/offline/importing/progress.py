"""Progress bars on stderr (rich) for reading and loading, or nothing when disabled."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)


class Bars:
    """Rich progress bars on stderr, or nothing when disabled."""

    def __init__(self, bar: Progress | None) -> None:
        self._bar = bar

    def add(self, description: str, total: int | None = None) -> Task:
        if self._bar is None:
            return Task(None, TaskID(0))
        return Task(self._bar, self._bar.add_task(description, total=total), total)


class Task:
    """One bar: ``update`` moves it, ``done`` fills it (to ``count`` when given)."""

    def __init__(self, bar: Progress | None, task: TaskID, total: int | None = None) -> None:
        self._bar = bar
        self._task = task
        self._total = total

    def update(self, completed: int, total: int | None = None) -> None:
        if total is not None:
            self._total = total
        if self._bar is not None:
            self._bar.update(self._task, completed=completed, total=self._total)

    def done(self, count: int | None = None) -> None:
        total = count if count is not None else self._total if self._total is not None else 1
        self.update(total, total)


def _rich_progress(enabled: bool) -> Progress | None:
    if not enabled:
        return None
    columns = (
        TextColumn("{task.description:<28}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    return Progress(*columns, console=Console(stderr=True))


@contextmanager
def progress_bars(enabled: bool) -> Iterator[Bars]:
    """Bars shown while the block runs; ones that show nothing when not ``enabled``."""
    bar = _rich_progress(enabled)
    if bar is None:
        yield Bars(None)
        return
    with bar:
        yield Bars(bar)
