"""Deadlines measured on the monotonic clock, derived from a caller's remaining time, and
cancelled when the caller gives up."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from cascade_server.errors import CancelledWorkError, DeadlineError


class Deadline:
    """The moment (``time.monotonic()``) by which a request must be answered.

    ``cancel()`` (the caller gave up) makes the time left zero at once: stage code that
    checks the deadline stops at its next ``check``, and work registered with
    ``on_cancel`` (queued source lookups, say) is called off.
    """

    __slots__ = ("_callbacks", "_cancelled", "_lock", "expires_at")

    def __init__(self, expires_at: float) -> None:
        self.expires_at = expires_at
        self._cancelled = False
        self._callbacks: list[Callable[[], object]] = []
        self._lock = threading.Lock()

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        """A deadline ``seconds`` from now."""
        return cls(time.monotonic() + seconds)

    @classmethod
    def from_remaining(cls, remaining_s: float | None, default_s: float) -> Deadline:
        """The caller's deadline, or ``default_s`` from now when the caller set none."""
        if remaining_s is None or remaining_s > 10 * 365 * 86_400:
            return cls.after(default_s)
        return cls.after(remaining_s)

    @property
    def cancelled(self) -> bool:
        """Whether the caller gave up."""
        return self._cancelled

    def cancel(self) -> None:
        """The caller gave up: no time is left, and registered work is called off."""
        with self._lock:
            self._cancelled = True
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()

    def on_cancel(self, callback: Callable[[], object]) -> None:
        """Call ``callback`` when the deadline is cancelled (at once if it was)."""
        with self._lock:
            if not self._cancelled:
                self._callbacks.append(callback)
                return
        callback()

    def remaining(self) -> float:
        """Seconds left; negative once passed, zero once cancelled."""
        if self._cancelled:
            return 0.0
        return self.expires_at - time.monotonic()

    def budget(self, limit_s: float, reserve_s: float = 0.0) -> float:
        """Time for a sub-call: at most ``limit_s``, leaving ``reserve_s`` for the caller."""
        return max(0.0, min(limit_s, self.remaining() - reserve_s))

    def check(self, what: str) -> None:
        """Raise CANCELLED when the caller gave up, DEADLINE_EXCEEDED when time ran out."""
        if self._cancelled:
            raise CancelledWorkError(f"the caller cancelled the request during {what}")
        if self.remaining() <= 0:
            raise DeadlineError(f"the deadline passed during {what}")
