"""Our engine as a limiter: one rate limit, or a full tier with reserve and settle."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from quotas.engine import Decision, Limit, Policy, QuotaEngine, connect
from quotas.engine.limits import RATE_REQUESTS

from .limiters import HOUR, OURS, OURS_TIER, Limiter

# One AI call of the full tier: reserved worst case, then what it really used.
RESERVE_TOKENS, USED_TOKENS = 1_200, 400
RESERVE_SPEND, USED_SPEND = 1_000, 400  # micro-USD


def tier_quota(amount: int, *, per_minute: int | None = None, concurrent: int = 8) -> Any:
    """A full tier scaled to `amount` requests, with budgets that the requests run out first."""
    from quotas.policy import Quota

    return Quota(
        tier_slug="bench",
        requests_per_minute=per_minute or amount,
        burst=per_minute or amount,
        requests_per_day=amount,
        tokens_per_day=amount * RESERVE_TOKENS,
        tokens_per_month=amount * RESERVE_TOKENS * 31,
        spend_per_month=Decimal(amount * RESERVE_SPEND * 31) / 1_000_000,
        max_concurrent_requests=concurrent,
    )


class Ours(Limiter):
    name = OURS
    prefix = "bench-q"

    def __init__(self, amount: int, redis_url: str, namespace: str) -> None:
        super().__init__(amount, redis_url, namespace)
        self.engine = QuotaEngine(connect(redis_url), prefix=f"{self.prefix}-{namespace}")
        limit = Limit("requests_per_hour", RATE_REQUESTS, amount, interval=HOUR)
        self.policy = Policy(limits=(limit,), track_usage=False, rehydrate=False)

    def hit(self, user: int) -> bool:
        return self.engine.reserve(f"u:{user}", self.policy).allowed

    def fill(self, user: int, count: int) -> None:
        if count:
            self.engine.reserve(f"u:{user}", self.policy, requests=count)

    def keys(self, client: Any, user: int) -> list[str]:
        return self.engine.subject_keys(f"u:{user}")


class OursTier(Ours):
    """Rate and burst, requests per day, tokens per day and month, spend, concurrency."""

    name = OURS_TIER
    prefix = "bench-qt"

    def __init__(
        self, amount: int, redis_url: str, namespace: str, *, per_minute: int | None = None
    ) -> None:
        super().__init__(amount, redis_url, namespace)
        concurrent = 8 if per_minute is None else 1_000
        self.policy = tier_quota(amount, per_minute=per_minute, concurrent=concurrent).policy()

    def reserve(self, user: int, count: int = 1) -> Decision:
        return self.engine.reserve(
            f"u:{user}",
            self.policy,
            requests=count,
            tokens=RESERVE_TOKENS * count,
            spend=RESERVE_SPEND * count,
            lease=True,
        )

    def settle(self, decision: Decision, count: int = 1) -> None:
        if decision.reservation is not None:
            self.engine.settle(
                decision.reservation, tokens=USED_TOKENS * count, spend=USED_SPEND * count
            )

    def hit(self, user: int) -> bool:
        decision = self.reserve(user)
        self.settle(decision)
        return decision.allowed

    def fill(self, user: int, count: int) -> None:
        if count:
            self.settle(self.reserve(user, count), count)
