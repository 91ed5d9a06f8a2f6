"""Deadlines measured on the monotonic clock, derived from a caller's remaining time."""

from __future__ import annotations

import time
from dataclasses import dataclass

from cascade_server.errors import DeadlineError


@dataclass(frozen=True)
class Deadline:
    """The moment (``time.monotonic()``) by which a request must be answered."""

    expires_at: float

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

    def remaining(self) -> float:
        """Seconds left; negative once passed."""
        return self.expires_at - time.monotonic()

    def budget(self, limit_s: float, reserve_s: float = 0.0) -> float:
        """Time for a sub-call: at most ``limit_s``, leaving ``reserve_s`` for the caller."""
        return max(0.0, min(limit_s, self.remaining() - reserve_s))

    def check(self, what: str) -> None:
        """Raise DEADLINE_EXCEEDED when the deadline has passed."""
        if self.remaining() <= 0:
            raise DeadlineError(f"the deadline passed during {what}")
