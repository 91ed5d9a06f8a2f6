"""Follow the active release: load a new one beside the current, validate, warm up, swap.

A server keeps serving what it has while the next release loads in a worker thread.
Only a release that loads, validates and warms up replaces the current one, in one
reference swap; a release that fails is logged, remembered and not retried, and the
previous one keeps serving. A release whose inputs for this component (the artifacts it
reads, by checksum, and the release's config and metrics) equal the serving release's,
such as one that only changes the blending policy, takes over what is already loaded.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Hashable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Generic, TypeVar

from cascade_server import heap
from cascade_server.logs import get_logger
from cascade_server.metrics import RELEASE_LOADS, set_active_release

T = TypeVar("T")
_log = get_logger(__name__)


@dataclass(frozen=True)
class Loaded(Generic[T]):
    """A loaded release (or the baseline, with ``release_id`` None)."""

    release_id: str | None
    value: T


class ReleaseWatcher(Generic[T]):
    """Holds what a stage serves with, and swaps it when the active release changes.

    ``load(release_id)`` must return a fully validated and warmed-up value, or raise.
    Before any release is published (or after every published one failed) the
    ``baseline`` value serves. ``inputs(release_id)``, when given, names what ``load``
    would read from the release; a release with the serving one's inputs is served with
    the loaded value, without loading it again. ``replace_turn()``, when given, is held
    while loading a release that replaces a served one (not the first: a starting server
    serves nothing yet), so servers can take turns.
    """

    def __init__(
        self,
        *,
        read_active: Callable[[], str | None],
        load: Callable[[str], T],
        baseline: T,
        name: str,
        on_reject: Callable[[str, str], None] | None = None,
        inputs: Callable[[str], Hashable] | None = None,
        replace_turn: Callable[[], AbstractContextManager[object]] | None = None,
    ) -> None:
        self._read_active = read_active
        self._load = load
        self._on_reject = on_reject
        self._inputs = inputs
        self._replace_turn = replace_turn
        self._current: Loaded[T] = Loaded(None, baseline)
        self._current_inputs: Hashable = None
        self._rejected: dict[str, str] = {}
        self._name = name

    def current(self) -> Loaded[T]:
        """What to serve one whole request with."""
        return self._current

    @property
    def rejected(self) -> dict[str, str]:
        """Releases that failed to load here, with the reason."""
        return dict(self._rejected)

    def refresh(self) -> bool:
        """Load and swap in the active release if it changed. Blocking; True when swapped."""
        active = self._read_active()
        if active is None or active == self._current.release_id or active in self._rejected:
            return False
        started = time.perf_counter()
        try:
            inputs = self._inputs(active) if self._inputs is not None else None
            reused = (
                inputs is not None
                and self._current.release_id is not None
                and inputs == self._current_inputs
            )
            if reused:
                value = self._current.value
            else:
                # Only a load that replaces a served release waits for its turn.
                turn = self._replace_turn if self._current.release_id is not None else None
                with turn() if turn is not None else contextlib.nullcontext():
                    value = self._load(active)
        except Exception as error:
            self._rejected[active] = f"{type(error).__name__}: {error}"
            RELEASE_LOADS.labels(self._name, "rejected").inc()
            _log.exception(
                "release rejected; the current one keeps serving",
                release_id=active,
                serving=self._current.release_id or "baseline",
                component=self._name,
            )
            if self._on_reject is not None:
                try:
                    self._on_reject(active, self._rejected[active])
                except Exception:
                    _log.exception("could not record the rejection", release_id=active)
            return False
        if self._read_active() != active:
            # Another release became active while this one loaded: serve that one next.
            _log.info("release no longer active after loading; not swapped in", release_id=active)
            return False
        self._current = Loaded(active, value)
        self._current_inputs = inputs
        RELEASE_LOADS.labels(self._name, "reused" if reused else "loaded").inc()
        set_active_release(self._name, active)
        if not reused:
            heap.settle()
        _log.info(
            "release swapped in",
            release_id=active,
            component=self._name,
            reused_loaded=reused,
            load_s=round(time.perf_counter() - started, 3),
        )
        return True

    async def keep_fresh(
        self, interval_s: float, stop: asyncio.Event, on_first: Callable[[], None]
    ) -> None:
        """Check for a new active release every ``interval_s`` seconds until ``stop`` is set.

        ``on_first`` is called after the first check, whatever its outcome, so a server
        restarting with a published release serves it from its first request.
        """
        first = True
        while not stop.is_set():
            try:
                await asyncio.to_thread(self.refresh)
            except Exception:
                _log.exception("could not check the active release", component=self._name)
            if first:
                first = False
                on_first()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)
