"""Keep long-lived objects out of the garbage collector's full collections.

A server's heap is mostly long-lived: modules, models, the engagement snapshot. Each
full collection scans all of it, which paused every request for about 80 ms every second
or two under load. Freezing (``gc.freeze``) moves what exists out of the collector's
sight; requests' short-lived objects are still collected as usual, and frozen objects
are still freed by reference counting.

Only reference cycles among frozen objects would never be collected. The models of a
release (numpy arrays, Annoy, LightGBM) hold none, so a replaced release is freed by
reference counting the moment it is swapped out (``tests/db/test_train_pipeline.py``
checks); TensorFlow objects do hold cycles, so once TensorFlow is loaded (a release
made before the models' array files) replacing a release also collects in full.
"""

from __future__ import annotations

import gc
import sys


def freeze() -> None:
    """Freeze everything allocated so far (after loading data that stays)."""
    gc.freeze()


def collect_and_freeze() -> None:
    """Collect garbage among all objects, frozen ones included, then freeze the rest: one
    full collection's pause (100-250 ms on two cores), for when no request waits on it."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def settle() -> None:
    """After a release was replaced: collect what loading the new one left (cheap: frozen
    objects are not scanned), then freeze the rest; in full, frozen objects included,
    only when TensorFlow is loaded."""
    if "tensorflow" in sys.modules:
        collect_and_freeze()
    else:
        gc.collect()
        gc.freeze()
