import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from cascade_server.retrieval.source_run import SourceRun


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=4) as executor:
        yield executor


def call(value: str, delay_s: float = 0.0, threads: list[int] | None = None) -> Callable[[], str]:
    def run() -> str:
        if threads is not None:
            threads.append(threading.get_ident())
        time.sleep(delay_s)
        return value

    return run


def test_quick_calls_run_one_after_another_on_one_thread(pool: ThreadPoolExecutor) -> None:
    threads: list[int] = []
    run = SourceRun([call(v, threads=threads) for v in "abcde"], pool, handoff_s=1.0)
    assert run.wait(5.0) == list("abcde")
    assert len(set(threads)) == 1
    assert threading.get_ident() not in threads


def test_a_slow_call_hands_the_rest_to_another_thread(pool: ThreadPoolExecutor) -> None:
    threads: list[int] = []
    calls = [call("slow", 0.4, threads), call("a", threads=threads), call("b", threads=threads)]
    run = SourceRun(calls, pool, handoff_s=0.02)
    started = time.perf_counter()
    outcomes = run.wait(0.2)
    assert time.perf_counter() - started < 0.3  # the budget, not the slow call
    assert outcomes == [None, "a", "b"]
    assert threads[1] == threads[2] != threads[0]


def test_calls_not_started_in_time_never_start() -> None:
    later = threading.Event()

    def never() -> str:
        later.set()
        return "late"

    one = ThreadPoolExecutor(max_workers=1)  # no thread to hand on to
    run = SourceRun([call("slow", 0.3), never], one, handoff_s=0.01)
    assert run.wait(0.1) == [None, None]
    assert run.started == 1
    one.shutdown(wait=True)
    assert not later.is_set()


def test_errors_are_returned_as_outcomes(pool: ThreadPoolExecutor) -> None:
    def fail() -> str:
        raise RuntimeError("index missing")

    outcomes = SourceRun([fail, call("b")], pool, handoff_s=1.0).wait(5.0)
    assert isinstance(outcomes[0], RuntimeError)
    assert outcomes[1] == "b"


def test_stop_ends_the_wait_and_starts_nothing_more() -> None:
    later = threading.Event()

    def never() -> str:
        later.set()
        return "late"

    one = ThreadPoolExecutor(max_workers=1)
    run = SourceRun([call("slow", 0.3), never], one, handoff_s=1.0)
    threading.Timer(0.05, run.stop).start()
    started = time.perf_counter()
    assert run.wait(5.0) == [None, None]
    assert time.perf_counter() - started < 0.25
    one.shutdown(wait=True)
    assert not later.is_set()


class CountingCondition(threading.Condition):
    """Counts how often a thread woke from ``wait``."""

    def __init__(self) -> None:
        super().__init__()
        self.wakes = 0

    def wait(self, timeout: float | None = None) -> bool:
        woken = super().wait(timeout)
        self.wakes += 1
        return woken


def test_the_waiting_thread_wakes_at_the_end_not_at_each_call(pool: ThreadPoolExecutor) -> None:
    run = SourceRun([call(str(i), 0.002) for i in range(20)], pool, handoff_s=1.0)
    counting = CountingCondition()
    run._changed = counting
    assert run.wait(5.0) == [str(i) for i in range(20)]
    assert counting.wakes <= 2  # each wake-up is a context switch and a lock hand-over
