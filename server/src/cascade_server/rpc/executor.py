"""Run blocking work (scoring, database calls) off the event loop, keeping log context."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from cascade_server.pipeline.deadline import Deadline

T = TypeVar("T")


class BlockingRunner:
    """A bounded thread pool; ``run`` awaits a blocking call in it with the caller's context."""

    def __init__(self, workers: int, name: str) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)

    async def run(self, function: Callable[[], T], *, deadline: Deadline | None = None) -> T:
        """Await ``function()`` on a worker thread. When the awaiting call is cancelled (its
        caller gave up), ``deadline`` is cancelled too, so the work stops at its next check."""
        context = contextvars.copy_context()
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self._pool, context.run, function
            )
        except asyncio.CancelledError:
            if deadline is not None:
                deadline.cancel()
            raise

    def close(self) -> None:
        """Stop the workers after the queued calls finish."""
        self._pool.shutdown(wait=True, cancel_futures=True)
