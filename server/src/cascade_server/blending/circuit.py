"""Circuit breakers for the front door's calls to retrieval and ranking.

A stage that fails ``failures`` calls in a row is not called for ``cool_down_s``
seconds: requests take the stage's fallback at once instead of each waiting for its
own failure (a dead server costs a connect timeout per call, an overloaded one more
load). After the cool-down one call goes through as a probe; success closes the
circuit, failure opens it for another cool-down.

``within`` cuts a call off when its hop budget runs out, on the front door's own clock:
a transport's deadline is not exact enough for a budget of microseconds (a fast reply
can come back inside it), and the budget is the front door's promise, not the server's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from cascade_server.logs import get_logger
from cascade_server.metrics import CIRCUIT_OPEN
from cascade_server.pipeline.types import DegradationKind

T = TypeVar("T")
_log = get_logger(__name__)


class StageCallError(Exception):
    """A stage call failed; ``kind`` says how (the front door falls back)."""

    def __init__(self, kind: DegradationKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


async def within(budget_s: float, stage: str, call: Awaitable[T]) -> T:
    """``call``'s result, or StageCallError(DEADLINE_EXCEEDED) once ``budget_s`` has passed.

    The call is cancelled when cut off (a gRPC call cancels its RPC).
    """
    timeout = asyncio.timeout(budget_s)
    try:
        async with timeout:
            return await call
    except TimeoutError as error:
        if not timeout.expired():
            raise
        raise StageCallError(
            DegradationKind.DEADLINE_EXCEEDED,
            f"{stage} did not answer within its budget of {budget_s * 1000:.3g} ms",
        ) from error


@dataclass(frozen=True)
class BreakerConfig:
    """When a circuit opens and for how long."""

    failures: int = 5
    """Consecutive failed calls that open the circuit (0: never open)."""
    cool_down_s: float = 5.0
    """How long an open circuit skips calls before one probe goes through."""
    clock: Callable[[], float] = time.monotonic


class CircuitBreaker:
    """Counts one stage's consecutive failures and skips calls while open."""

    def __init__(self, stage: str, config: BreakerConfig) -> None:
        self.stage = stage
        self._config = config
        self._failures = 0
        self._opened_at: float | None = None
        self._probing = False
        CIRCUIT_OPEN.labels(stage).set(0)

    @property
    def is_open(self) -> bool:
        """Whether calls are being skipped (a probe may be under way)."""
        return self._opened_at is not None

    async def call(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """``attempt()``, unless the circuit is open: then StageCallError at once."""
        if self._opened_at is not None:
            waited = self._config.clock() - self._opened_at
            if self._probing or waited < self._config.cool_down_s:
                raise StageCallError(
                    DegradationKind.UNAVAILABLE,
                    f"{self.stage} skipped: its circuit is open after {self._config.failures} "
                    f"failed calls in a row; a probe call goes through "
                    f"{max(0.0, self._config.cool_down_s - waited):.1f} s from now",
                )
            self._probing = True
        try:
            result = await attempt()
        except StageCallError:
            self._failed()
            raise
        finally:
            self._probing = False
        self._succeeded()
        return result

    def _failed(self) -> None:
        self._failures += 1
        if self._opened_at is not None or (
            self._config.failures and self._failures >= self._config.failures
        ):
            if self._opened_at is None:
                _log.warning(
                    "circuit opened: calls are skipped for the cool-down",
                    stage=self.stage,
                    failures=self._failures,
                    cool_down_s=self._config.cool_down_s,
                )
            self._opened_at = self._config.clock()
            CIRCUIT_OPEN.labels(self.stage).set(1)

    def _succeeded(self) -> None:
        if self._opened_at is not None:
            _log.info("circuit closed: the stage answers again", stage=self.stage)
        self._failures = 0
        self._opened_at = None
        CIRCUIT_OPEN.labels(self.stage).set(0)
