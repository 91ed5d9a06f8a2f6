import sys
import threading

import pytest

from cascade_server.priority import quick_lock_handoffs


@pytest.fixture(autouse=True)
def _default_interval():
    before = sys.getswitchinterval()
    sys.setswitchinterval(0.005)
    yield
    sys.setswitchinterval(before)


def test_handoffs_are_quick_only_while_the_block_runs():
    with quick_lock_handoffs(0.0005):
        assert sys.getswitchinterval() == pytest.approx(0.0005)
    assert sys.getswitchinterval() == pytest.approx(0.005)


def test_the_interval_comes_back_after_an_error():
    with pytest.raises(RuntimeError, match="load failed"), quick_lock_handoffs(0.001):
        raise RuntimeError("load failed")
    assert sys.getswitchinterval() == pytest.approx(0.005)


def test_overlapping_blocks_keep_the_shortest_until_the_last_ends():
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
    seen = []

    def first():
        with quick_lock_handoffs(0.001):
            first_in.set()
            second_in.wait()
        first_out.set()

    thread = threading.Thread(target=first)
    thread.start()
    first_in.wait()
    with quick_lock_handoffs(0.0005):
        second_in.set()
        first_out.wait()
        seen.append(sys.getswitchinterval())  # the first ended: still the shortest
    thread.join()
    assert seen == [pytest.approx(0.0005)]
    assert sys.getswitchinterval() == pytest.approx(0.005)
