import threading

import numpy as np

from cascade_server.features.scratch import ScratchArray


def test_a_thread_gets_the_same_filled_array_until_it_needs_a_longer_one():
    scratch = ScratchArray(np.int32, -1)
    first = scratch.get(10)
    assert first.dtype == np.int32
    assert len(first) == 10
    assert (first == -1).all()
    assert scratch.get(5) is first
    longer = scratch.get(20)
    assert len(longer) == 20
    assert (longer == -1).all()
    assert scratch.get(20) is longer


def test_each_thread_has_its_own_array():
    scratch = ScratchArray(np.bool_, False)
    mine = scratch.get(100)
    mine[3] = True  # in use by this thread
    seen: list[np.ndarray] = []
    worker = threading.Thread(target=lambda: seen.append(scratch.get(100)))
    worker.start()
    worker.join()
    assert seen[0] is not mine
    assert not seen[0].any()
    mine[3] = False
