"""CPU priority of work that prepares releases.

Servers answer requests on the same cores where commands import data, train, publish
and activate releases, and where a server's child process checks a release before it
loads it. That work can wait a few milliseconds where a request cannot, so it runs at a
lower priority: the kernel's scheduler then gives the servers the CPU first and the
rest to the background work, which loses nothing on an idle machine.
"""

from __future__ import annotations

import os

BACKGROUND_NICENESS = 10
"""Added to the niceness of background work (0 is a normal process, 19 the lowest)."""


def lower_priority() -> None:
    """Make this process background work (its threads and children inherit it)."""
    os.nice(BACKGROUND_NICENESS)
