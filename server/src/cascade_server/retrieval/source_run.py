"""A request's candidate sources, run on as few threads as keep them on time."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import Generic, TypeVar

T = TypeVar("T")


class SourceRun(Generic[T]):
    """Runs ``calls`` on a thread pool: one after another on one thread while they finish
    quickly; when none has finished for ``handoff_s``, another thread takes the calls not
    yet started, so a slow call holds up only itself.

    Python threads share one interpreter lock: a request's seven sources on seven threads
    cost it more CPU in lock hand-offs and wake-ups than on one thread, and gain nothing
    in latency when each takes a millisecond or two.
    """

    def __init__(self, calls: Sequence[Callable[[], T]], pool: Executor, handoff_s: float) -> None:
        self._calls = list(calls)
        self._pool = pool
        self._handoff_s = handoff_s
        self._outcomes: list[T | Exception | None] = [None] * len(self._calls)
        self._next = 0
        self._finished = 0
        self._stopped = False
        self._progress_at = 0.0
        """When a call last finished, or the calls were last handed on."""
        self._changed = threading.Condition()

    @property
    def started(self) -> int:
        """How many calls have started (they start in order)."""
        return self._next

    def wait(self, timeout_s: float) -> list[T | Exception | None]:
        """Start the calls, wait until all have finished, ``timeout_s`` has passed or
        ``stop`` was called; then what each call returned or raised (None for a call that
        had not finished). Calls not started by then never start.

        The waiting thread wakes only to hand on (``handoff_s`` after the last call
        finished or the last hand-off), at the end, or when stopped: not at each call's
        end, since each wake-up of a sleeping thread costs the kernel's time and the
        interpreter lock's hand-over."""
        started = time.monotonic()
        end = started + timeout_s
        self._progress_at = started  # no worker yet: no lock needed
        self._pool.submit(self._work)
        with self._changed:
            while self._finished < len(self._calls) and not self._stopped:
                now = time.monotonic()
                if now >= end:
                    break
                if self._next >= len(self._calls):  # all started: nothing to hand on
                    self._changed.wait(end - now)
                    continue
                handoff_at = self._progress_at + self._handoff_s
                if now < handoff_at:
                    self._changed.wait(min(end, handoff_at) - now)
                    continue
                self._pool.submit(self._work)  # the running call is slow: hand on the rest
                self._progress_at = now
            self._stopped = True
            return list(self._outcomes)

    def stop(self) -> None:
        """Start no further calls and end ``wait`` (calls already running finish)."""
        with self._changed:
            self._stopped = True
            self._changed.notify_all()

    def _work(self) -> None:
        while True:
            with self._changed:
                if self._stopped or self._next >= len(self._calls):
                    return
                index = self._next
                self._next += 1
            outcome: T | Exception
            try:
                outcome = self._calls[index]()
            except Exception as error:  # the caller reports it
                outcome = error
            with self._changed:
                self._outcomes[index] = outcome
                self._finished += 1
                self._progress_at = time.monotonic()
                if self._finished == len(self._calls):
                    self._changed.notify_all()
