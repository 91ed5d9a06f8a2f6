"""Keep long-lived objects out of the garbage collector's full collections.

A server's heap is mostly long-lived: modules, models, the engagement snapshot. Each
full collection scans all of it, which paused every request for about 80 ms every second
or two under load. Freezing (``gc.freeze``) moves what exists out of the collector's
sight; requests' short-lived objects are still collected as usual, and frozen objects
are still freed by reference counting. Only reference cycles in frozen objects would
never be collected, so when a release (whose models do hold cycles) is replaced, the
heap is unfrozen, collected once, and frozen again.
"""

from __future__ import annotations

import gc


def freeze() -> None:
    """Freeze everything allocated so far (after loading data that stays)."""
    gc.freeze()


def settle() -> None:
    """Collect garbage among all objects, frozen ones included, then freeze the rest (after
    replacing something that may hold reference cycles). One full collection's pause."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()
