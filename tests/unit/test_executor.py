"""Blocking work runs off the event loop, and learns when its caller gives up."""

import asyncio
import time

from cascade_server.pipeline.deadline import Deadline
from cascade_server.rpc.executor import BlockingRunner


def test_a_cancelled_caller_cancels_the_works_deadline():
    runner = BlockingRunner(1, "test")
    deadline = Deadline.after(5.0)

    async def scenario() -> None:
        task = asyncio.create_task(runner.run(lambda: time.sleep(0.3), deadline=deadline))
        await asyncio.sleep(0.05)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(scenario())
    assert deadline.cancelled
    runner.close()


def test_finished_work_leaves_the_deadline_alone():
    runner = BlockingRunner(1, "test")
    deadline = Deadline.after(5.0)
    assert asyncio.run(runner.run(lambda: 42, deadline=deadline)) == 42
    assert not deadline.cancelled
    runner.close()
