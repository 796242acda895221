"""The two decisions every protected call pays, ours and the `limits` library's:
`TierRateThrottle` (rate + burst + requests per day) and the full chat reservation (rate,
day requests and tokens, month tokens and spend, a concurrency lease, the provider's
backoff read); the `limits` library doing the same limits, one hit per limit."""

from __future__ import annotations

from typing import Any

from .limiters import Limiter, fake_request
from .ours import RESERVE_SPEND, RESERVE_TOKENS, OursTier

THROTTLE = "ours: TierRateThrottle decision"
CHAT = "ours: full chat reservation"
LIMITS_THROTTLE = "limits: the throttle's 2 limits"
LIMITS_CHAT = "limits: the chat reservation's 5 limits"
NAMES = (THROTTLE, LIMITS_THROTTLE, CHAT, LIMITS_CHAT)

PROVIDER = "upstream:gpt-4o-mini"  # the subject a provider's backoff holds


class Throttle(Limiter):
    """`TierRateThrottle.allow_request` on the project's service, the caller's quota given
    (the policy lookup is cached per process, and is not what is measured here)."""

    name = THROTTLE

    def __init__(self, amount: int, redis_url: str, namespace: str) -> None:
        super().__init__(amount, redis_url, namespace)
        from quotas.policy import Quota
        from quotas.services import service
        from quotas.throttling import TierRateThrottle

        quota = Quota(
            tier_slug="bench",
            requests_per_minute=amount,
            burst=amount,
            requests_per_day=amount,
        )
        self.service = service
        self.quota = quota
        self.policy = quota.policy(budgets=False, track_usage=True)
        prefix = f"u:{namespace}-"

        class BenchThrottle(TierRateThrottle):
            def get_subject(self, request: Any) -> tuple[str, Any, bool]:
                return f"{prefix}{request.user.pk}", quota, True

        self.throttle = BenchThrottle
        self.prefix = prefix
        self.seen: set[int] = set()

    def hit(self, user: int) -> bool:
        if user not in self.seen:  # its windows made first: no ledger in the bench
            self.seen.add(user)
            self.fill(user, 0)
        # DRF builds its throttles anew for every request.
        return bool(self.throttle().allow_request(fake_request(user), None))

    def fill(self, user: int, count: int) -> None:
        # Made (or seeded at zero) here, so the timed calls never read the ledger.
        self.service.engine.reserve(f"{self.prefix}{user}", self.policy, requests=count)

    def keys(self, client: Any, user: int) -> list[str]:
        return self.service.engine.subject_keys(f"{self.prefix}{user}")


class Chat(OursTier):
    """The full tier's reservation as the chat view makes it: with its lease, and the
    provider's backoff read in the same round trip."""

    name = CHAT
    prefix = "bench-qc"

    def reserve(self, user: int, count: int = 1) -> Any:
        return self.engine.reserve(
            f"u:{user}",
            self.policy,
            requests=count,
            tokens=RESERVE_TOKENS * count,
            spend=RESERVE_SPEND * count,
            lease=True,
            watch=(PROVIDER,),
        )


class LimitsSame(Limiter):
    """The `limits` library's fixed windows, one hit per limit (it has no lease)."""

    def __init__(self, amount: int, redis_url: str, namespace: str) -> None:
        super().__init__(amount, redis_url, namespace)
        from limits import RateLimitItemPerDay, RateLimitItemPerMinute, RateLimitItemPerMonth
        from limits.storage import storage_from_string
        from limits.strategies import FixedWindowRateLimiter

        ns = f"bench-{namespace}-{self.short}"
        per = {"minute": RateLimitItemPerMinute, "day": RateLimitItemPerDay}
        per["month"] = RateLimitItemPerMonth
        self.items = [
            (per[period](amount * scale, namespace=f"{ns}-{what}"), cost)
            for period, what, scale, cost in self.shape
        ]
        self.limiter = FixedWindowRateLimiter(storage_from_string(redis_url))

    short = ""
    shape: tuple[tuple[str, str, int, int], ...] = ()  # period, resource, scale, cost

    def hit(self, user: int) -> bool:
        ident = f"u{user}"
        return all(self.limiter.hit(item, ident, cost=cost) for item, cost in self.items)

    def fill(self, user: int, count: int) -> None:
        if count:
            for item, cost in self.items:
                self.limiter.hit(item, f"u{user}", cost=cost * count)

    def pattern(self, user: int) -> str:
        return f"LIMITS:*bench-{self.namespace}-{self.short}-*/u{user}/*"


class LimitsThrottle(LimitsSame):
    name, short = LIMITS_THROTTLE, "throttle"
    shape = (("minute", "requests", 1, 1), ("day", "requests", 1, 1))


class LimitsChat(LimitsSame):
    name, short = LIMITS_CHAT, "chat"
    shape = (
        ("minute", "requests", 1, 1),
        ("day", "requests", 1, 1),
        ("day", "tokens", RESERVE_TOKENS, RESERVE_TOKENS),
        ("month", "tokens", RESERVE_TOKENS * 31, RESERVE_TOKENS),
        ("month", "spend", RESERVE_SPEND * 31, RESERVE_SPEND),
    )


def make(name: str, amount: int, redis_url: str, namespace: str) -> Limiter:
    classes: dict[str, type[Limiter]] = {
        THROTTLE: Throttle,
        CHAT: Chat,
        LIMITS_THROTTLE: LimitsThrottle,
        LIMITS_CHAT: LimitsChat,
    }
    return classes[name](amount, redis_url, namespace)
