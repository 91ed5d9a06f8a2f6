"""Circuit breakers: a stage that keeps failing is skipped for a cool-down, then probed;
a hop that outlives its budget is cut off on the front door's clock."""

import asyncio

import pytest
from support.backends import FailingStage

from cascade_server.blending.circuit import BreakerConfig, CircuitBreaker, StageCallError, within
from cascade_server.pipeline.types import DegradationKind, StageName


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Stage:
    """Answers or fails on demand, and counts its calls."""

    def __init__(self) -> None:
        self.failing = True
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        await asyncio.sleep(0.01)  # in flight for a while, like a real call
        if self.failing:
            raise StageCallError(DegradationKind.UNAVAILABLE, "down")
        return "answer"


def is_open(breaker: CircuitBreaker) -> bool:
    return breaker.is_open  # a call: an asserted property would stay narrowed for mypy


def run(breaker, stage):
    return asyncio.run(breaker.call(stage))


def test_consecutive_failures_open_the_circuit_and_a_probe_closes_it():
    clock, stage = Clock(), Stage()
    breaker = CircuitBreaker("ranking", BreakerConfig(failures=3, cool_down_s=5.0, clock=clock))
    for _ in range(3):
        with pytest.raises(StageCallError, match="down"):
            run(breaker, stage)
    assert is_open(breaker)
    with pytest.raises(StageCallError, match="circuit is open") as skipped:
        run(breaker, stage)
    assert skipped.value.kind is DegradationKind.UNAVAILABLE
    assert stage.calls == 3  # skipped, not called
    clock.now += 5.0
    with pytest.raises(StageCallError, match="down"):  # the probe fails: open again
        run(breaker, stage)
    assert stage.calls == 4
    with pytest.raises(StageCallError, match="circuit is open"):
        run(breaker, stage)
    clock.now += 5.0
    stage.failing = False
    assert run(breaker, stage) == "answer"
    assert not is_open(breaker)
    assert run(breaker, stage) == "answer"
    assert stage.calls == 6


def test_a_success_resets_the_count_and_only_one_probe_goes_through():
    clock, stage = Clock(), Stage()
    breaker = CircuitBreaker("retrieval", BreakerConfig(failures=2, cool_down_s=1.0, clock=clock))
    with pytest.raises(StageCallError):
        run(breaker, stage)
    stage.failing = False
    run(breaker, stage)
    stage.failing = True
    with pytest.raises(StageCallError, match="down"):
        run(breaker, stage)
    assert not is_open(breaker)  # one failure since the success
    with pytest.raises(StageCallError, match="down"):
        run(breaker, stage)
    assert is_open(breaker)
    clock.now += 1.0

    async def two_at_once():
        stage.failing = False
        results = await asyncio.gather(
            breaker.call(stage), breaker.call(stage), return_exceptions=True
        )
        return results

    first, second = asyncio.run(two_at_once())
    assert first == "answer"
    assert isinstance(second, StageCallError)
    assert "circuit is open" in second.message


def test_zero_failures_never_opens():
    stage = Stage()
    breaker = CircuitBreaker("ranking", BreakerConfig(failures=0))
    for _ in range(20):
        with pytest.raises(StageCallError, match="down"):
            run(breaker, stage)
    assert not is_open(breaker)


def test_the_front_door_stops_calling_a_failing_stage_and_still_answers():
    from unit.blending.test_recommend import make_recommender, recommend

    ranking = FailingStage(DegradationKind.UNAVAILABLE)
    recommender = make_recommender(ranking=ranking)
    for _ in range(8):
        result = recommend(recommender, "u1", page_size=5)
        assert len(result.blend.items) == 5
        assert [d.stage for d in result.degraded] == [StageName.RANKING]
    assert ranking.calls == 5  # the default: five failures open the circuit
    assert "circuit is open" in result.degraded[0].message


def test_a_call_past_its_budget_is_cut_off_and_cancelled():
    cancelled = []

    async def slow() -> str:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise
        return "late"

    async def main() -> None:
        with pytest.raises(StageCallError) as raised:
            await within(0.00002, "ranking", slow())
        assert raised.value.kind == DegradationKind.DEADLINE_EXCEEDED
        assert "ranking did not answer within its budget of 0.02 ms" in raised.value.message

    asyncio.run(main())
    assert cancelled == [True]


def test_a_call_inside_its_budget_answers_and_its_own_timeouts_pass_through():
    async def quick() -> str:
        await asyncio.sleep(0)
        return "answer"

    async def times_out_by_itself() -> str:
        raise TimeoutError("the call's own timeout")

    async def main() -> None:
        assert await within(5.0, "ranking", quick()) == "answer"
        with pytest.raises(TimeoutError, match="own timeout"):
            await within(5.0, "ranking", times_out_by_itself())

    asyncio.run(main())
