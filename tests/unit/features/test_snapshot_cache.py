import dataclasses
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from support.engagement import small_snapshot

from cascade_server.features.snapshot_cache import SnapshotCache


def test_a_value_is_built_once_per_snapshot_however_many_threads_ask_at_once():
    first = small_snapshot()
    second = dataclasses.replace(first, snapshot_id="second")
    built = []
    lock = threading.Lock()

    def build(snapshot):
        with lock:
            built.append(snapshot.snapshot_id)
        time.sleep(0.02)  # the other threads ask meanwhile
        return f"value of {snapshot.snapshot_id}"

    cache = SnapshotCache[str]()
    with ThreadPoolExecutor(6) as pool:
        values = list(pool.map(lambda s: cache.get(s, build), [first] * 6))
    assert values == [f"value of {first.snapshot_id}"] * 6
    assert cache.get(first, build) == f"value of {first.snapshot_id}"
    assert cache.get(second, build) == "value of second"
    assert built == [first.snapshot_id, "second"]
