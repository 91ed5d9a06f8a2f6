"""`cascade serve` runs its server on the event loop CASCADE_EVENT_LOOP names."""

import asyncio

import pytest
import uvloop

from cascade_server.cli.serving import run_on_loop
from cascade_server.settings import EventLoop, Settings


def loop_type(kind: EventLoop) -> type:
    seen: list[type] = []

    async def main() -> None:
        seen.append(type(asyncio.get_running_loop()))
        await asyncio.sleep(0)

    run_on_loop(kind, main())
    return seen[0]


def test_uvloop_is_the_default():
    assert Settings().event_loop is EventLoop.UVLOOP


@pytest.mark.parametrize(
    ("kind", "is_uvloop"), [(EventLoop.UVLOOP, True), (EventLoop.ASYNCIO, False)]
)
def test_the_server_runs_on_the_loop_the_setting_names(kind, is_uvloop):
    kind_seen = loop_type(kind)
    assert issubclass(kind_seen, uvloop.Loop) is is_uvloop
    assert issubclass(kind_seen, asyncio.AbstractEventLoop)


def test_the_setting_reads_its_environment_variable(monkeypatch):
    monkeypatch.setenv("CASCADE_EVENT_LOOP", "asyncio")
    assert Settings().event_loop is EventLoop.ASYNCIO
    monkeypatch.setenv("CASCADE_EVENT_LOOP", "tokio")
    with pytest.raises(ValueError, match="event_loop"):
        Settings()
