"""Every limiter under test behind one small interface: hit, fill, and where its keys are.

Django, DRF and the peers are imported when a limiter is built, so that a spawned process
can configure Django first.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

OURS = "ours: 1 rate limit"
OURS_TIER = "ours: full tier"
DRF = "DRF UserRateThrottle"
LIMITS_FIXED = "limits: fixed window"
LIMITS_MOVING = "limits: moving window"
LIMITS_SLIDING = "limits: sliding window counter"
RATELIMIT = "django-ratelimit"
NAMES = (OURS, OURS_TIER, DRF, LIMITS_FIXED, LIMITS_MOVING, LIMITS_SLIDING, RATELIMIT)

DRF_CACHE, RATELIMIT_CACHE = "bench-drf", "bench-rl"
HOUR = 3600


def cache_settings(redis_url: str) -> dict[str, dict[str, Any]]:
    """The django-redis caches the DRF throttle and django-ratelimit count in."""
    return {
        alias: {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": redis_url,
            "KEY_PREFIX": alias,
        }
        for alias in (DRF_CACHE, RATELIMIT_CACHE)
    }


def fake_request(user: int) -> Any:
    return SimpleNamespace(
        user=SimpleNamespace(pk=user, is_authenticated=True),
        META={"REMOTE_ADDR": "127.0.0.1"},
        method="POST",
    )


class Limiter:
    """`amount` requests per hour (per day for the full tier) for each user."""

    name = ""

    def __init__(self, amount: int, redis_url: str, namespace: str) -> None:
        self.amount = amount
        self.redis_url = redis_url
        self.namespace = namespace

    def hit(self, user: int) -> bool:
        raise NotImplementedError

    def fill(self, user: int, count: int) -> None:
        """Bring `user` to the state `count` admitted requests leave, quickly."""
        raise NotImplementedError

    def pattern(self, user: int) -> str:
        """SCAN pattern of the user's keys."""
        raise NotImplementedError

    def keys(self, client: Any, user: int) -> list[str]:
        return [k.decode() for k in client.scan_iter(match=self.pattern(user), count=1000)]


def make(name: str, amount: int, redis_url: str, namespace: str) -> Limiter:
    from . import ours, peers

    classes: dict[str, type[Limiter]] = {
        OURS: ours.Ours,
        OURS_TIER: ours.OursTier,
        DRF: peers.DRFThrottle,
        LIMITS_FIXED: peers.LimitsFixed,
        LIMITS_MOVING: peers.LimitsMoving,
        LIMITS_SLIDING: peers.LimitsSliding,
        RATELIMIT: peers.DjangoRatelimit,
    }
    return classes[name](amount, redis_url, namespace)
