"""Servers on one host take turns loading a new release.

Loading a million-item release costs a server several seconds of CPU (checksums, the
child process's check, reading and validating arrays). When every server loads at
once they take both cores of a small machine from the requests they are still
serving; one at a time, a swap lasts longer and serving keeps most of the machine.
The turn is an exclusive ``flock`` on a file under ``CASCADE_HOME/releases``, which
the servers of one host share; the kernel releases it when a holder dies.
"""

from __future__ import annotations

import contextlib
import fcntl
import time
from collections.abc import Iterator
from pathlib import Path

from cascade_server.logs import get_logger

TURN_FILE = ".load-turn"
_log = get_logger(__name__)


@contextlib.contextmanager
def load_turn(releases: Path, component: str) -> Iterator[None]:
    """Hold this host's release-loading turn (waiting for it) for the ``with`` block."""
    releases.mkdir(parents=True, exist_ok=True)
    with (releases / TURN_FILE).open("a") as handle:
        started = time.perf_counter()
        fcntl.flock(handle, fcntl.LOCK_EX)
        waited = time.perf_counter() - started
        if waited > 0.01:
            _log.info(
                "waited for another server to load the release",
                component=component,
                waited_s=round(waited, 3),
            )
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
