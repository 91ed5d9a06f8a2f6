"""CPU priority of work that prepares releases.

Servers answer requests on the same cores where commands import data, train, publish
and activate releases, and where a server's child process checks a release before it
loads it. That work can wait a few milliseconds where a request cannot, so it runs at a
lower priority: the kernel's scheduler then gives the servers the CPU first and the
rest to the background work, which loses nothing on an idle machine.

Inside a server, loading a release runs on a thread beside the requests' threads, and
priority there is the interpreter lock's: ``quick_lock_handoffs`` makes the loading
thread hand it over sooner while it loads.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator

BACKGROUND_NICENESS = 19
"""Added to the niceness of background work (0 is a normal process; the kernel caps it
at 19, the lowest, which weighs 1/68 of a normal process yet is never starved, unlike
the SCHED_IDLE class: a release check must finish on a saturated machine too). Hashing
a million-item release's 3 GB at niceness 10 beside servers answering 25 requests/s
still lifted their slowest requests to 105-155 ms, at 19 to about 110 ms (about 70 ms
without it)."""


def lower_priority() -> None:
    """Make this process background work (its threads and children inherit it)."""
    os.nice(BACKGROUND_NICENESS)


_handoffs_lock = threading.Lock()
_handoffs: list[float] = []
"""The switch interval before the first ``quick_lock_handoffs`` still running began."""


@contextlib.contextmanager
def quick_lock_handoffs(interval_s: float) -> Iterator[None]:
    """While the block runs, a thread waiting for the interpreter lock gets it within
    ``interval_s`` instead of Python's 5 ms (``sys.setswitchinterval``, process-wide).

    A request crosses threads a dozen times (event loop, worker, gRPC's callbacks) and
    each crossing can wait a full interval while a loading thread computes: at a million
    items a release's load lifted requests to 120-140 ms at 5 ms, and the p99 during a
    model swap fell from 3.6-4.6x to 2.0-2.6x the steady one at 0.5 ms. Handing over that often
    costs every request a little (steady p50 +2 ms, p99 +6 ms at 50 requests/s when set
    for good), so it lasts only as long as the load. Overlapping blocks keep the shortest
    interval until the last ends, which restores the one before the first."""
    with _handoffs_lock:
        _handoffs.append(sys.getswitchinterval())
        sys.setswitchinterval(min(interval_s, sys.getswitchinterval()))
    try:
        yield
    finally:
        with _handoffs_lock:
            before = _handoffs.pop()
            if not _handoffs:
                sys.setswitchinterval(before)
