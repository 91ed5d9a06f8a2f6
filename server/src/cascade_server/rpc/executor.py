"""Run blocking work (scoring, database calls) off the event loop, keeping log context."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


class BlockingRunner:
    """A bounded thread pool; ``run`` awaits a blocking call in it with the caller's context."""

    def __init__(self, workers: int, name: str) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)

    async def run(self, function: Callable[[], T]) -> T:
        """Await ``function()`` on a worker thread."""
        context = contextvars.copy_context()
        return await asyncio.get_running_loop().run_in_executor(self._pool, context.run, function)

    def close(self) -> None:
        """Stop the workers after the queued calls finish."""
        self._pool.shutdown(wait=True, cancel_futures=True)
