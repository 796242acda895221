"""A user's effective limits: tier plus overrides, as engine policies. Cached per process."""

from __future__ import annotations

import contextlib
import contextvars
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields, replace
from decimal import Decimal
from typing import Any, TypeVar

from .conf import conf
from .engine import Level, Limit, Policy
from .limit_kinds import KINDS
from .models import LIMIT_FIELDS, AIModel, APIKey, LimitValues, Team, Tier, UserQuota
from .subjects import key_subject, team_subject, user_subject

logger = logging.getLogger("quotas")

T = TypeVar("T")


@dataclass(frozen=True)
class Quota:
    """What applies to one user: their tier's values with their overrides on top."""

    tier_slug: str = ""
    tier_name: str = "Unlimited"
    blocked: bool = False
    soft: bool = False  # shadow mode: counted and alerted, never refused
    no_tier: bool = False  # no tier applies (and there is no default tier): refused
    requests_per_minute: int | None = None
    burst: int | None = None
    tokens_per_minute: int | None = None
    requests_per_day: int | None = None
    tokens_per_day: int | None = None
    spend_per_day: Decimal | None = None
    tokens_per_month: int | None = None
    spend_per_month: Decimal | None = None
    max_tokens_per_request: int | None = None
    max_concurrent_requests: int | None = None
    allowed_models: tuple[str, ...] = ()  # empty: every active model
    default_model: str | None = None
    fallback_model: str | None = None
    degrade_at_percent: int | None = None
    # The user's team and the key of the call, when they have limits of their own: a call
    # must pass them too, in the same decision.
    team_id: int | None = None
    team_slug: str = ""
    team: Quota | None = None
    key_id: str | None = None
    key: Quota | None = None

    def limits(self, *, budgets: bool = True) -> tuple[Limit, ...]:
        """The engine limits; `budgets=False` keeps only those charged on every request."""
        out: list[Limit] = []
        for kind in KINDS:
            value = getattr(self, kind.field)
            if value is None or (kind.period == "rate" and not value):
                continue  # unlimited (a rate of 0 too: it could never pass)
            if not budgets and not kind.every_request:
                continue
            # Requests may come `burst` at once; tokens up to one minute's worth.
            burst = self.burst if kind.field == "requests_per_minute" else None
            out.append(Limit(kind.field, kind.code, kind.engine_amount(value), burst=burst))
        return tuple(out)

    def subject(self, user_id: int) -> str:
        """The user's subject: under their team's hash tag when they have one."""
        return user_subject(user_id, self.team_id)

    def levels(self, subject: str, *, budgets: bool = True) -> tuple[Level, ...]:
        """The levels a call of the user (`subject`) is decided with: team, then key."""
        levels = []
        if self.team is not None and self.team_id is not None:
            policy = self.team.policy(budgets=budgets)
            levels.append(Level("team", team_subject(self.team_id), policy))
        if self.key is not None and self.key_id is not None:
            policy = self.key.policy(budgets=budgets)
            levels.append(Level("key", key_subject(subject, self.key_id), policy))
        return tuple(levels)

    def named_limits(self, *, budgets: bool = True) -> tuple[Limit, ...]:
        """Every limit of a decision on this quota, named as its states are: the user's,
        then each level's ("team.tokens_per_day"). The headers read rates from them."""
        built: dict[bool, tuple[Limit, ...]] = self.__dict__.setdefault("_named_limits_built", {})
        found = built.get(budgets)
        if found is None:
            found = built[budgets] = self._named_limits(budgets)
        return found

    def _named_limits(self, budgets: bool) -> tuple[Limit, ...]:
        named = list(self.limits(budgets=budgets))
        for level, quota in (("team", self.team), ("key", self.key)):
            if quota is not None:
                limits = quota.limits(budgets=budgets)
                named += [replace(limit, name=f"{level}.{limit.name}") for limit in limits]
        return tuple(named)

    def policy(self, *, budgets: bool = True, track_usage: bool = True) -> Policy:
        # Quotas are cached per process and asked for their policy on every request:
        # each keeps the policies it built (a Policy is immutable).
        key = (budgets, track_usage, conf.TIME_ZONE)
        built: dict[tuple[bool, bool, str], Policy] = self.__dict__.setdefault("_policies", {})
        policy = built.get(key)
        if policy is None:
            policy = built[key] = Policy(
                limits=self.limits(budgets=budgets),
                time_zone=conf.TIME_ZONE,
                track_usage=track_usage,
                rehydrate=track_usage,
            )
        return policy


def quota_from_tier(tier: Tier | None, override: LimitValues | None = None) -> Quota:
    """A tier's values with the overrides (a user's quota, a team, a key) on top."""
    values: dict[str, Any] = {}
    if tier is None:
        values.update(no_tier=True, tier_name="No tier")  # never unlimited
    else:
        allowed = tuple(sorted(m.name for m in tier.allowed_models.all() if m.active))
        values.update(
            tier_slug=tier.slug,
            tier_name=tier.name,
            allowed_models=allowed,
            default_model=tier.default_model.name if tier.default_model else None,
            fallback_model=tier.fallback_model.name if tier.fallback_model else None,
            degrade_at_percent=tier.degrade_at_percent,
            soft=tier.soft,
        )
        for name in LIMIT_FIELDS:
            values[name] = getattr(tier, name)
    if override is not None:
        values["blocked"] = getattr(override, "blocked", False)
        for name in LIMIT_FIELDS:
            value = getattr(override, name)
            if value is not None:
                values[name] = value
    known = {f.name for f in fields(Quota)}
    return Quota(**{k: v for k, v in values.items() if k in known})


def default_tier() -> Tier | None:
    return Tier.objects.filter(is_default=True).prefetch_related("allowed_models").first()


def _service() -> Any:
    # The service builds on the quotas defined here: it is imported when first needed.
    from .services import service

    return service


class NotCached(Exception):
    """Under `cached_only()`: what the lookup needs is not cached, or the cache is due to
    check the policy version; look it up where I/O is allowed (a worker thread)."""


_cached_only: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "quotas_policy_cached_only", default=False
)


@contextlib.contextmanager
def cached_only() -> Iterator[None]:
    """Lookups in this block answer from the cache without I/O, or raise NotCached: so an
    event loop plans a call on a warm cache without switching to a thread."""
    token = _cached_only.set(True)
    try:
        yield
    finally:
        _cached_only.reset(token)


def needs_io() -> None:
    """Raise NotCached under `cached_only()`: the caller is about to do I/O."""
    if _cached_only.get():
        raise NotCached()


class PolicyCache:
    """Per-process cache of quotas, dropped when any process bumps the policy version."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[Any, Any] = {}
        self._loaded_at: dict[Any, float] = {}
        self._version: int | None = None
        self._checked_at = 0.0

    def get(self, key: Any, load: Callable[[], T], *, max_age: float | None = None) -> T:
        """The cached value of `key`, else `load()`'s; `max_age`: seconds after which it is
        loaded again even if no process said it changed."""
        now = time.monotonic()
        if _cached_only.get():
            if now - self._checked_at >= conf.POLICY_CACHE_SECONDS:
                raise NotCached()
            cached: T | None = self._entries.get(key)
            if cached is None or self._expired(key, now, max_age):
                raise NotCached()
            return cached
        self._check_version()
        quota: T | None = self._entries.get(key)
        if quota is None or self._expired(key, now, max_age):
            quota = load()
            with self._lock:
                self._entries[key] = quota
                if max_age is not None:
                    self._loaded_at[key] = now
        return quota

    def _expired(self, key: Any, now: float, max_age: float | None) -> bool:
        return max_age is not None and now - self._loaded_at.get(key, now) >= max_age

    def _check_version(self) -> None:
        now = time.monotonic()
        if now - self._checked_at < conf.POLICY_CACHE_SECONDS:
            return
        self._checked_at = now
        try:
            version = _service().policy_version()
        except Exception:  # Redis down: fall back to reloading every interval
            version = None
        if version is None or version != self._version:
            with self._lock:
                self._entries.clear()
                self._loaded_at.clear()
                self._version = version

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._loaded_at.clear()
            self._checked_at = 0.0


cache = PolicyCache()


def quota_for_user(user: Any) -> Quota:
    """The effective quota of an authenticated user."""

    def load() -> Quota:
        override = (
            UserQuota.objects.select_related("tier", "team__tier")
            .prefetch_related("tier__allowed_models")
            .filter(user_id=user.pk)
            .first()
        )
        tier = override.tier if override and override.tier else default_tier()
        quota = quota_from_tier(tier, override)
        team = override.team if override else None
        if team is None:
            return quota
        return replace(
            quota,
            team_id=team.pk,
            team_slug=team.slug,
            team=quota_for_team(team),
            blocked=quota.blocked or team.blocked,
        )

    return cache.get(("user", user.pk), load)


def quota_for_team(team: Team) -> Quota:
    """A team's own limits: its tier's values with its overrides on top."""
    return quota_from_tier(team.tier, team)


def has_own_limits(key: APIKey) -> bool:
    return key.tier_id is not None or any(getattr(key, f) is not None for f in LIMIT_FIELDS)


def quota_for_key(user: Any, key: APIKey | None) -> Quota:
    """The quota of a call by `user` on `key`: the user's, with the key's own limits (a
    tier and overrides) as one more level when it has any."""
    quota = quota_for_user(user)
    if key is None:
        return quota

    def load() -> Quota:
        fresh = APIKey.objects.select_related("tier").filter(pk=key.pk).first()
        if fresh is None or not has_own_limits(fresh):
            return quota
        return replace(quota, key_id=str(fresh.pk), key=quota_from_tier(fresh.tier, fresh))

    return cache.get(("key", key.pk, user.pk), load)


def key_over_owner(key: APIKey) -> dict[str, str]:
    """The key's limits that are above its owner's (a key may only narrow them)."""
    owner = quota_for_user(key.user)
    own = quota_from_tier(key.tier, key)
    errors = {}
    for kind in KINDS:
        mine, theirs = getattr(own, kind.field), getattr(owner, kind.field)
        if mine is not None and theirs is not None and mine > theirs:
            errors[kind.field] = f"At most the owner's limit of {theirs}."
    return errors


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
        _service().bump_policy_version()
