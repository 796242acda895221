"""The redis.asyncio engine decides exactly as the sync one, on the same counters."""

from __future__ import annotations

from quotas.engine import Usage
from quotas.engine.aio import AsyncQuotaEngine, connect_async
from tests.event_loop import run_in_fresh_loop

from .policies import FULL, NOW


def run(redis_url, body):
    async def main():
        engine = AsyncQuotaEngine(connect_async(redis_url), prefix="test")
        try:
            return await body(engine)
        finally:
            await engine.close()

    return run_in_fresh_loop(main())


def test_reserve_and_settle_match_the_sync_engine(redis_url, engine) -> None:
    async def body(aio):
        granted = await aio.reserve("a", FULL, tokens=600, spend=10, lease=True, now=NOW)
        denied = await aio.reserve("a", FULL, tokens=600, lease=True, now=NOW)
        await aio.settle(granted.reservation, tokens=100, spend=5)
        return granted, denied

    granted, denied = run(redis_url, body)

    assert granted.allowed and not denied.allowed
    assert denied.denied_by == "tokens per day"
    # The sync engine reads what the async one wrote: 100 of 1,000 tokens used, lease freed.
    seen = engine.peek("a", FULL, now=NOW)
    tokens = next(s for s in seen.states if s.name == "tokens per day")
    assert tokens.used == 100
    assert next(s for s in seen.states if s.code == "cc").used == 0
    assert engine.reserve("a", FULL, tokens=900, now=NOW).allowed


def test_a_missing_window_is_seeded_from_the_seeder(redis_url) -> None:
    seeded = []

    def seeder(subject, window):
        seeded.append(window.kind)
        return Usage(requests=0, tokens=950, spend=0)

    async def body(aio):
        return await aio.reserve("b", FULL, tokens=100, now=NOW, seeder=seeder)

    decision = run(redis_url, body)

    assert not decision.allowed  # 950 + 100 is over the day's 1,000
    assert decision.denied_by == "tokens per day"
    assert "d" in "".join(seeded)


def test_refund_gives_everything_back_and_holds_are_read(redis_url, engine) -> None:
    engine.hold("upstream:m", 30)

    async def body(aio):
        granted = await aio.reserve(
            "c", FULL, tokens=1_000, lease=True, now=NOW, watch=("upstream:m",)
        )
        await aio.refund(granted.reservation)
        return granted

    granted = run(redis_url, body)

    assert granted.allowed
    assert 29 <= granted.watched_hold <= 30
    assert engine.reserve("c", FULL, tokens=1_000, now=NOW).allowed
