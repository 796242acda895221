"""The peers as limiters: DRF's UserRateThrottle, the limits library, django-ratelimit."""

from __future__ import annotations

import time

from .limiters import (
    DRF,
    DRF_CACHE,
    HOUR,
    LIMITS_FIXED,
    LIMITS_MOVING,
    LIMITS_SLIDING,
    RATELIMIT,
    RATELIMIT_CACHE,
    Limiter,
    fake_request,
)


class DRFThrottle(Limiter):
    name = DRF

    def __init__(self, amount: int, redis_url: str, namespace: str) -> None:
        super().__init__(amount, redis_url, namespace)
        from django.core.cache import caches
        from django.utils.connection import ConnectionProxy
        from rest_framework.throttling import UserRateThrottle

        self.throttle = type(
            "BenchThrottle",
            (UserRateThrottle,),
            {
                "rate": f"{amount}/hour",
                "cache": ConnectionProxy(caches, DRF_CACHE),
                "cache_format": f"throttle_{namespace}_%(scope)s_%(ident)s",
            },
        )

    def hit(self, user: int) -> bool:
        # DRF builds its throttles anew for every request.
        return bool(self.throttle().allow_request(fake_request(user), None))

    def fill(self, user: int, count: int) -> None:
        throttle = self.throttle()
        now = time.time()
        step = HOUR / 2 / max(count, 1)
        history = [now - i * step for i in range(count)]  # newest first, as DRF keeps it
        key = throttle.get_cache_key(fake_request(user), None)
        throttle.cache.set(key, history, throttle.duration)

    def pattern(self, user: int) -> str:
        return f"{DRF_CACHE}:*:throttle_{self.namespace}_user_{user}"


class LimitsLibrary(Limiter):
    strategy = short = ""

    def __init__(self, amount: int, redis_url: str, namespace: str) -> None:
        super().__init__(amount, redis_url, namespace)
        import limits.strategies
        from limits import RateLimitItemPerHour
        from limits.storage import storage_from_string

        self.item = RateLimitItemPerHour(amount, namespace=f"bench-{namespace}-{self.short}")
        self.limiter = getattr(limits.strategies, self.strategy)(storage_from_string(redis_url))

    def hit(self, user: int) -> bool:
        return bool(self.limiter.hit(self.item, f"u{user}"))

    def fill(self, user: int, count: int) -> None:
        if count:
            self.limiter.hit(self.item, f"u{user}", cost=count)

    def pattern(self, user: int) -> str:
        # The sliding window wraps its keys in a hash tag: "{ns/u1/...}" and "{...}/-1".
        return f"LIMITS:*{self.item.namespace}/u{user}/*"


class LimitsFixed(LimitsLibrary):
    name, strategy, short = LIMITS_FIXED, "FixedWindowRateLimiter", "fixed"


class LimitsMoving(LimitsLibrary):
    name, strategy, short = LIMITS_MOVING, "MovingWindowRateLimiter", "moving"


class LimitsSliding(LimitsLibrary):
    name, strategy, short = LIMITS_SLIDING, "SlidingWindowCounterRateLimiter", "sliding"


class DjangoRatelimit(Limiter):
    name = RATELIMIT

    def __init__(self, amount: int, redis_url: str, namespace: str) -> None:
        super().__init__(amount, redis_url, namespace)
        from django_ratelimit.core import get_usage

        self.get_usage = get_usage
        self.group = f"bench-{namespace}"
        self.rate = f"{amount}/h"

    def hit(self, user: int) -> bool:
        usage = self.get_usage(
            fake_request(user), group=self.group, key="user", rate=self.rate, increment=True
        )
        return not usage["should_limit"]

    def _key(self, user: int) -> str:
        # The library hashes its keys; these private helpers are the only way to find one.
        from django_ratelimit import ALL
        from django_ratelimit.core import _get_window, _make_cache_key, _split_rate

        window = _get_window(str(user), _split_rate(self.rate)[1])
        return _make_cache_key(self.group, window, self.rate, str(user), ALL)

    def fill(self, user: int, count: int) -> None:
        from django.core.cache import caches

        if count:
            caches[RATELIMIT_CACHE].set(self._key(user), count, HOUR + 5)

    def pattern(self, user: int) -> str:
        from django.core.cache import caches

        return str(caches[RATELIMIT_CACHE].make_key(self._key(user)))
