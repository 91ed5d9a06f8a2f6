import asyncio
import contextlib

from cascade_server.artifacts.watcher import ReleaseWatcher


class Registry:
    def __init__(self):
        self.active = None
        self.loads = []

    def load(self, release_id):
        self.loads.append(release_id)
        if release_id.startswith("bad"):
            raise ValueError("the index file is truncated")
        return f"models of {release_id}"


def watcher(registry, **options):
    return ReleaseWatcher(
        read_active=lambda: registry.active,
        load=registry.load,
        baseline="baseline",
        name="t",
        **options,
    )


def test_the_baseline_serves_until_a_release_is_active():
    registry = Registry()
    w = watcher(registry)
    assert not w.refresh()
    assert (w.current().release_id, w.current().value) == (None, "baseline")


def test_a_new_active_release_is_loaded_and_swapped_in_once():
    registry = Registry()
    w = watcher(registry)
    registry.active = "r1"
    assert w.refresh()
    assert not w.refresh()
    assert w.current().value == "models of r1"
    assert registry.loads == ["r1"]


def test_a_failing_release_is_rejected_once_and_the_previous_keeps_serving():
    registry = Registry()
    w = watcher(registry)
    registry.active = "r1"
    w.refresh()
    registry.active = "bad2"
    assert not w.refresh()
    assert not w.refresh()
    assert w.current().release_id == "r1"
    assert registry.loads == ["r1", "bad2"]
    assert "truncated" in w.rejected["bad2"]
    registry.active = "r3"
    assert w.refresh()
    assert w.current().release_id == "r3"


def test_keep_fresh_reports_its_first_check_and_stops():
    registry = Registry()
    registry.active = "r1"
    w = watcher(registry)
    first = []

    async def run():
        stop = asyncio.Event()
        task = asyncio.create_task(w.keep_fresh(0.01, stop, lambda: first.append(True)))
        while not first:
            await asyncio.sleep(0.01)
        stop.set()
        await task

    asyncio.run(run())
    assert first == [True]
    assert w.current().release_id == "r1"


def test_a_release_replaced_while_it_loaded_is_not_swapped_in():
    registry = Registry()
    w = watcher(registry)
    registry.active = "r1"
    w.refresh()

    def slow_load(release_id):
        registry.active = "r3"  # published while r2 was loading
        return f"models of {release_id}"

    registry.active = "r2"
    w._load = slow_load
    assert not w.refresh()
    assert w.current().release_id == "r1"
    w._load = registry.load
    assert w.refresh()
    assert w.current().release_id == "r3"


def test_a_rejection_is_reported_once_with_its_reason():
    registry = Registry()
    reported = []
    w = watcher(
        registry, on_reject=lambda release_id, reason: reported.append((release_id, reason))
    )
    registry.active = "bad-1"
    assert not w.refresh()
    assert not w.refresh()
    assert reported == [("bad-1", "ValueError: the index file is truncated")]


def test_a_release_with_the_serving_ones_inputs_takes_over_what_is_loaded():
    registry = Registry()
    inputs = {"r1": "models v1", "r2": "models v1", "r3": "models v2", "r4": "models v2"}
    w = watcher(registry, inputs=inputs.__getitem__)
    registry.active = "r1"
    assert w.refresh()
    registry.active = "r2"  # e.g. only the blending policy changed
    assert w.refresh()
    assert (w.current().release_id, w.current().value) == ("r2", "models of r1")
    registry.active = "r3"
    assert w.refresh()
    registry.active = "r4"
    assert w.refresh()
    assert (w.current().release_id, w.current().value) == ("r4", "models of r3")
    assert registry.loads == ["r1", "r3"]


def test_a_release_whose_inputs_cannot_be_read_is_rejected():
    registry = Registry()

    def inputs(release_id):
        raise ValueError(f"cannot read the manifest of {release_id}")

    w = watcher(registry, inputs=inputs)
    registry.active = "r1"
    assert not w.refresh()
    assert "cannot read the manifest" in w.rejected["r1"]
    assert registry.loads == []


def test_only_a_load_replacing_a_served_release_waits_for_its_turn():
    registry = Registry()
    turns = []

    @contextlib.contextmanager
    def turn():
        turns.append(("in", list(registry.loads)))
        yield
        turns.append(("out", list(registry.loads)))

    inputs = {"r1": "v1", "r2": "v2", "r3": "v2"}
    w = watcher(registry, inputs=inputs.__getitem__, replace_turn=turn)
    registry.active = "r1"  # the first load: nothing is served yet
    assert w.refresh()
    registry.active = "r2"
    assert w.refresh()
    registry.active = "r3"  # the same inputs: nothing to load
    assert w.refresh()
    assert turns == [("in", ["r1"]), ("out", ["r1", "r2"])]
