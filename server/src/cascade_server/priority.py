"""CPU priority of work that prepares releases.

Servers answer requests on the same cores where commands import data, train, publish
and activate releases, and where a server's child process checks a release before it
loads it. That work can wait a few milliseconds where a request cannot, so it runs at a
lower priority: the kernel's scheduler then gives the servers the CPU first and the
rest to the background work, which loses nothing on an idle machine.
"""

from __future__ import annotations

import os

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
