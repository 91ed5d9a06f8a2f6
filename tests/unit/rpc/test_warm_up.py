"""The warm-up runs where requests will: on the server's request runner."""

import asyncio
import threading

from cascade_server.rpc.app import Binding, CascadeServer
from cascade_server.rpc.executor import BlockingRunner
from cascade_server.settings import Settings


def test_the_warm_up_leaves_its_runner_thread_ready_for_the_first_request() -> None:
    warmed_on: list[threading.Thread] = []
    runner = BlockingRunner(4, "stage")
    binding = Binding(
        "test.Service",
        lambda server: None,
        warm=lambda: warmed_on.append(threading.current_thread()),
    )
    server = CascadeServer(Settings(_env_file=None, host="127.0.0.1"), binding, 0, runner=runner)

    async def scenario() -> threading.Thread:
        await server.start()
        try:
            await server.wait_ready(10.0)
            # The first request after SERVING runs on the thread the warm-up used.
            return await runner.run(threading.current_thread)
        finally:
            await server.stop(0)

    first_request_on = asyncio.run(scenario())
    runner.close()
    [thread] = warmed_on
    assert thread.name.startswith("stage")
    assert first_request_on is thread
