import threading
import time

from cascade_server.artifacts.load_turns import load_turn


def test_servers_on_one_host_load_one_at_a_time(tmp_path):
    events = []
    first_inside = threading.Event()

    def load(name, hold_s):
        with load_turn(tmp_path / "releases", name):
            events.append(f"{name} in")
            first_inside.set()
            time.sleep(hold_s)
            events.append(f"{name} out")

    first = threading.Thread(target=load, args=("retrieval", 0.3))
    first.start()
    first_inside.wait(5)
    second = threading.Thread(target=load, args=("ranking", 0))
    second.start()
    first.join(5)
    second.join(5)
    assert events == ["retrieval in", "retrieval out", "ranking in", "ranking out"]


def test_a_turn_is_given_back_when_loading_fails(tmp_path):
    try:
        with load_turn(tmp_path, "ranking"):
            raise ValueError("the ranker cannot be loaded")
    except ValueError:
        pass
    done = threading.Event()

    def load():
        with load_turn(tmp_path, "blending"):
            done.set()

    thread = threading.Thread(target=load)
    thread.start()
    thread.join(5)
    assert done.is_set()
