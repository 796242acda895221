"""A user's effective limits: tier plus overrides, as engine policies. Cached per process."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass, fields
from decimal import Decimal
from typing import Any

from .conf import conf
from .engine import Limit, Policy
from .engine import limits as codes
from .engine_factory import get_engine
from .models import LIMIT_FIELDS, AIModel, Tier, UserQuota

logger = logging.getLogger("quotas")


@dataclass(frozen=True)
class Quota:
    """What applies to one user: their tier's values with their overrides on top."""

    tier_slug: str = ""
    tier_name: str = "Unlimited"
    blocked: bool = False
    requests_per_minute: int | None = None
    burst: int | None = None
    requests_per_day: int | None = None
    tokens_per_day: int | None = None
    tokens_per_month: int | None = None
    spend_per_month: Decimal | None = None
    max_tokens_per_request: int | None = None
    max_concurrent_requests: int | None = None
    allowed_models: tuple[str, ...] = ()  # empty: every active model
    default_model: str | None = None
    fallback_model: str | None = None
    degrade_at_percent: int | None = None

    def limits(self, *, budgets: bool = True) -> tuple[Limit, ...]:
        """The engine limits; `budgets=False` keeps only the request limits."""
        out: list[Limit] = []
        if self.requests_per_minute:
            out.append(
                Limit(
                    "requests_per_minute",
                    codes.RATE_REQUESTS,
                    self.requests_per_minute,
                    burst=self.burst,
                )
            )
        if self.requests_per_day is not None:
            out.append(Limit("requests_per_day", codes.DAY_REQUESTS, self.requests_per_day))
        if budgets:
            if self.tokens_per_day is not None:
                out.append(Limit("tokens_per_day", codes.DAY_TOKENS, self.tokens_per_day))
            if self.tokens_per_month is not None:
                out.append(Limit("tokens_per_month", codes.MONTH_TOKENS, self.tokens_per_month))
            if self.spend_per_month is not None:
                out.append(
                    Limit("spend_per_month", codes.MONTH_SPEND, to_micros(self.spend_per_month))
                )
            if self.max_concurrent_requests is not None:
                out.append(
                    Limit(
                        "max_concurrent_requests",
                        codes.CONCURRENCY,
                        self.max_concurrent_requests,
                    )
                )
        return tuple(out)

    def policy(self, *, budgets: bool = True, track_usage: bool = True) -> Policy:
        # Quotas are cached per process and asked for their policy on every request:
        # each keeps the policies it built (a Policy is immutable).
        key = (budgets, track_usage, conf.TIME_ZONE)
        built = self.__dict__.setdefault("_policies", {})
        policy = built.get(key)
        if policy is None:
            policy = built[key] = Policy(
                limits=self.limits(budgets=budgets),
                time_zone=conf.TIME_ZONE,
                track_usage=track_usage,
                rehydrate=track_usage,
            )
        return policy


def to_micros(usd: Decimal | int) -> int:
    """USD to whole micro-USD, rounded up."""
    return int((Decimal(usd) * 1_000_000).to_integral_value(rounding="ROUND_CEILING"))


def from_micros(micros: int) -> Decimal:
    return (Decimal(micros) / 1_000_000).quantize(Decimal("0.000001"))


def quota_from_tier(tier: Tier | None, override: UserQuota | None = None) -> Quota:
    values: dict[str, Any] = {}
    if tier is not None:
        allowed = tuple(sorted(m.name for m in tier.allowed_models.all() if m.active))
        values.update(
            tier_slug=tier.slug,
            tier_name=tier.name,
            allowed_models=allowed,
            default_model=tier.default_model.name if tier.default_model else None,
            fallback_model=tier.fallback_model.name if tier.fallback_model else None,
            degrade_at_percent=tier.degrade_at_percent,
        )
        for name in LIMIT_FIELDS:
            values[name] = getattr(tier, name)
    if override is not None:
        values["blocked"] = override.blocked
        for name in LIMIT_FIELDS:
            value = getattr(override, name)
            if value is not None:
                values[name] = value
    known = {f.name for f in fields(Quota)}
    return Quota(**{k: v for k, v in values.items() if k in known})


def default_tier() -> Tier | None:
    return Tier.objects.filter(is_default=True).prefetch_related("allowed_models").first()


class PolicyCache:
    """Per-process cache of quotas, dropped when any process bumps the policy version."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[Any, Quota] = {}
        self._version: int | None = None
        self._checked_at = 0.0

    def get(self, key: Any, load: Any) -> Any:
        self._check_version()
        quota = self._entries.get(key)
        if quota is None:
            quota = load()
            with self._lock:
                self._entries[key] = quota
        return quota

    def _check_version(self) -> None:
        now = time.monotonic()
        if now - self._checked_at < conf.POLICY_CACHE_SECONDS:
            return
        self._checked_at = now
        try:
            version = get_engine().policy_version()
        except Exception:  # Redis down: fall back to reloading every interval
            version = None
        if version is None or version != self._version:
            with self._lock:
                self._entries.clear()
                self._version = version

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._checked_at = 0.0


cache = PolicyCache()


def quota_for_user(user: Any) -> Quota:
    """The effective quota of an authenticated user."""

    def load() -> Quota:
        override = (
            UserQuota.objects.select_related("tier")
            .prefetch_related("tier__allowed_models")
            .filter(user_id=user.pk)
            .first()
        )
        tier = override.tier if override and override.tier else default_tier()
        return quota_from_tier(tier, override)

    return cache.get(("user", user.pk), load)


def quota_for_anonymous() -> Quota:
    """The quota of callers without an account, limited by IP."""

    def load() -> Quota:
        slug = conf.ANONYMOUS_TIER
        tier = None
        if slug:
            tier = Tier.objects.prefetch_related("allowed_models").filter(slug=slug).first()
            if tier is None:
                logger.warning("quotas: ANONYMOUS_TIER %r does not exist; using the default", slug)
        if tier is None:
            tier = default_tier()
        return quota_from_tier(tier)

    return cache.get(("anonymous", conf.ANONYMOUS_TIER), load)


def model_catalogue() -> dict[str, AIModel]:
    """Active models by name; cached like quotas, so dropped when any model changes."""
    return cache.get(
        ("models",),
        lambda: {m.name: m for m in AIModel.objects.filter(active=True).select_related("provider")},
    )


def invalidate() -> None:
    """Forget cached quotas here and tell every other process to do the same."""
    cache.clear()
    # If Redis is down, other processes still reload within POLICY_CACHE_SECONDS.
    with contextlib.suppress(Exception):
        get_engine().bump_policy_version()
