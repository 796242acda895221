"""The quota service: reserve before the provider call, settle after, keep the ledger."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from . import alerts, ledger_mode, metrics
from .conf import conf
from .database import closing_connections, in_orm_thread
from .engine import (
    CountersUnavailable,
    Decision,
    Level,
    Limit,
    Policy,
    QuotaEngine,
    Reservation,
    Usage,
    Window,
)
from .engine import limits as codes
from .engine.engine import HOLD, unavailable_on_error
from .engine_factory import get_async_engine, get_engine
from .ledger import book, ledger_usage, usage_of, window_day
from .limit_kinds import kind_of
from .models import LevelUsage, UsageRecord, UserQuota
from .money import from_micros, to_micros
from .policy import Quota
from .reconcile import WindowCheck, check_team, check_user, reconcile
from .subjects import ORG_SUBJECT, ledger_level, team_subject
from .upstream import UpstreamLimiter

logger = logging.getLogger("quotas")


class Blocked(Exception):
    """The user's quota is blocked by staff, or no tier applies to them."""


def _seed_from_ledger(subject: str, window: Window) -> Usage:
    level = ledger_level(subject)
    if level == ORG_SUBJECT:
        return replace(ledger_usage(None, window), requests=0, tokens=0)
    return usage_of(level, window)


@dataclass(frozen=True)
class Grant:
    """A granted reservation for one AI call, to settle or refund."""

    user_id: int
    model: str
    decision: Decision
    reservation: Reservation
    org: Reservation | None = None
    degraded: bool = False  # reserved in the ledger while Redis was unreachable
    quota: Quota | None = None  # what the call was decided on (its alert thresholds)
    shadowed: str | None = None  # a soft tier's: the limit that would have refused it


def _counted(
    result: tuple[Decision, Grant | None], started: float
) -> tuple[Decision, Grant | None]:
    """`result`, counted in the metrics (outcome, the limit that refused, the time taken)."""
    decision, grant = result
    if grant is not None and grant.shadowed:
        metrics.decided("soft", grant.shadowed, time.perf_counter() - started)
    elif grant is not None:
        metrics.decided("allowed", None, time.perf_counter() - started)
    else:
        metrics.decided("denied", decision.denied_by, time.perf_counter() - started)
    return result


def _unlimited(policy: Policy) -> Policy:
    """`policy` counting usage with no limit (a soft tier's call that would be refused)."""
    return Policy(limits=(), time_zone=policy.time_zone, track_usage=True)


def _shadow_reservation(reservation: dict[str, Any]) -> dict[str, Any]:
    levels = tuple(
        Level(level.name, level.subject, _unlimited(level.policy))
        for level in reservation["levels"]
    )
    return {**reservation, "policy": _unlimited(reservation["policy"]), "levels": levels}


def _may_shadow(quota: Quota, decision: Decision) -> bool:
    """A soft tier's call refused for a limit (not for a provider's backoff)."""
    return quota.soft and decision.denied_by not in (None, HOLD)


def _shadowed(denied: Decision, shadow: Decision, tokens: int, spend: int) -> Decision:
    """The refused decision as if granted: the shadow reservation, the limits' states with
    the ask counted (so headers still show the limits, and alerts see the usage)."""
    asks = {"requests": 1, "tokens": tokens, "spend": spend}
    states = []
    for state in denied.states:
        kind = kind_of(state.name.rpartition(".")[2], state.code)
        if kind.is_budget:
            state = state._replace(used=state.used + asks[kind.resource], remaining=0)
        states.append(state)
    return replace(
        denied,
        allowed=True,
        denied_by=None,
        retry_after=0.0,
        states=tuple(states),
        reservation=shadow.reservation,
        day_usage=shadow.day_usage,
        month_usage=shadow.month_usage,
        watched_hold=shadow.watched_hold,
    )


class QuotaService:
    """Decisions for users and anonymous callers; Redis for speed, the ledger as record.

    `clock` (seconds since the epoch) replaces Redis's clock when set, for tests.
    """

    clock: Callable[[], float] | None = None

    def __init__(self, engine: QuotaEngine | None = None) -> None:
        self._engine = engine

    def _now(self) -> float | None:
        return self.clock() if self.clock is not None else None

    @property
    def engine(self) -> QuotaEngine:
        return self._engine or get_engine()

    # plain request limits (DRF throttle) --------------------------------------------

    def check_request(self, subject: str, quota: Quota, *, track_usage: bool) -> Decision:
        """Charge one request against the request limits of `quota` (rate, burst, per day)."""
        policy = quota.policy(budgets=False, track_usage=track_usage)
        levels = quota.levels(subject, budgets=False) if track_usage else ()
        self.recover()
        reservation: dict[str, Any] = {
            "subject": subject,
            "policy": policy,
            "now": self._now(),
            "seeder": _seed_from_ledger,
            "levels": levels,
        }
        decision = self.engine.reserve(**reservation)
        if _may_shadow(quota, decision):  # a soft tier: counted without its limits
            shadow = self.engine.reserve(**_shadow_reservation(reservation))
            if shadow.allowed:
                decision = _shadowed(decision, shadow, 0, 0)
        return decision

    # AI calls -----------------------------------------------------------------------

    def reserve(
        self,
        user_id: int,
        quota: Quota,
        *,
        model: str,
        tokens: int,
        spend: int,
        record_denial: bool = True,
        watch: tuple[str, ...] = (),
    ) -> tuple[Decision, Grant | None]:
        """Reserve one request, `tokens` and `spend` (micro-USD) with a concurrency lease.

        A denied reservation charges nothing and is counted in the ledger (unless
        `record_denial` is off: the caller may still try a cheaper model). The holds on
        the `watch` subjects come back in `Decision.watched_hold`, read in the same round
        trip; a grant made while one is on stands until the caller refunds it.
        """
        if quota.blocked or quota.no_tier:
            raise Blocked()
        started = time.perf_counter()
        try:
            result = self._reserve(
                user_id,
                quota,
                model=model,
                tokens=tokens,
                spend=spend,
                record=record_denial,
                watch=watch,
            )
            metrics.ledger_mode(False)
        except CountersUnavailable as exc:
            metrics.redis_error("reserve")
            if not conf.FAIL_OPEN:
                raise
            logger.warning("quotas: Redis unreachable (%s); budgets enforced from the ledger", exc)
            metrics.ledger_mode(True)
            result = self._reserve_from_ledger(user_id, quota, model, tokens, spend, record_denial)
        return _counted(result, started)

    def _reserve_from_ledger(
        self,
        user_id: int,
        quota: Quota,
        model: str,
        tokens: int,
        spend: int,
        record_denial: bool,
    ) -> tuple[Decision, Grant | None]:
        """The ledger mode's reservation, while Redis cannot be reached."""
        cap = conf.ORG_SPEND_PER_MONTH
        decision = ledger_mode.reserve_from_ledger(
            user_id,
            quota,
            model=model,
            tokens=tokens,
            spend=spend,
            time_zone=conf.TIME_ZONE,
            org_cap=None if cap is None else to_micros(cap),
            record_denial=record_denial,
        )
        if decision.reservation is None:
            return decision, None
        grant = Grant(user_id, model, decision, decision.reservation, degraded=True, quota=quota)
        return decision, grant

    def _reserve(
        self,
        user_id: int,
        quota: Quota,
        *,
        model: str,
        tokens: int,
        spend: int,
        record: bool,
        watch: tuple[str, ...],
    ) -> tuple[Decision, Grant | None]:
        engine = self.engine
        self.recover()
        reservation = self._user_reservation(user_id, quota, tokens, spend, watch)
        decision = engine.reserve(**reservation)
        shadowed = None
        if _may_shadow(quota, decision):
            shadow = engine.reserve(**_shadow_reservation(reservation))
            if shadow.allowed:
                shadowed = decision.denied_by
                decision = _shadowed(decision, shadow, tokens, spend)
        if not decision.allowed or decision.reservation is None:
            if record:
                self.record_denial(user_id, decision, model)
            return decision, None
        org = None
        cap = conf.ORG_SPEND_PER_MONTH
        if cap is not None:
            org_decision = engine.reserve(
                ORG_SUBJECT,
                Policy(
                    limits=(Limit("org_spend_per_month", codes.MONTH_SPEND, to_micros(cap)),),
                    time_zone=conf.TIME_ZONE,
                    track_usage=False,
                ),
                requests=0,
                spend=spend,
                now=self._now(),
                seeder=_seed_from_ledger,
            )
            if not org_decision.allowed:
                engine.refund(decision.reservation)
                denied = replace(
                    org_decision,
                    states=decision.states + org_decision.states,
                    day_usage=decision.day_usage,
                    month_usage=decision.month_usage,
                )
                if record:
                    self.record_denial(user_id, denied, model)
                return denied, None
            org = org_decision.reservation
        grant = Grant(
            user_id, model, decision, decision.reservation, org, quota=quota, shadowed=shadowed
        )
        return decision, grant

    def _user_reservation(
        self, user_id: int, quota: Quota, tokens: int, spend: int, watch: tuple[str, ...]
    ) -> dict[str, Any]:
        """The engine's reserve arguments for one AI call of a user, with its lease."""
        subject = quota.subject(user_id)
        return {
            "subject": subject,
            "levels": quota.levels(subject),
            "policy": quota.policy(),
            "tokens": tokens,
            "spend": spend,
            "lease": True,
            "lease_seconds": conf.LEASE_SECONDS,
            "now": self._now(),
            "seeder": _seed_from_ledger,
            "watch": watch,
        }

    async def areserve(
        self,
        user_id: int,
        quota: Quota,
        *,
        model: str,
        tokens: int,
        spend: int,
        record_denial: bool = True,
        watch: tuple[str, ...] = (),
    ) -> tuple[Decision, Grant | None]:
        """`reserve` with the Redis call on `redis.asyncio`. The ledger mode, an org-wide
        cap and re-seeding after an outage take the sync path in a worker thread."""
        if quota.blocked or quota.no_tier:
            raise Blocked()
        if conf.ORG_SPEND_PER_MONTH is not None or ledger_mode.has_dirty():
            return await in_orm_thread(self.reserve)(
                user_id,
                quota,
                model=model,
                tokens=tokens,
                spend=spend,
                record_denial=record_denial,
                watch=watch,
            )
        reservation = self._user_reservation(user_id, quota, tokens, spend, watch)
        # The engine seeds a missing window in a worker thread of its own.
        reservation["seeder"] = closing_connections(_seed_from_ledger)
        shadowed = None
        started = time.perf_counter()
        try:
            decision = await get_async_engine().reserve(**reservation)
            if _may_shadow(quota, decision):
                shadow = await get_async_engine().reserve(**_shadow_reservation(reservation))
                if shadow.allowed:
                    shadowed = decision.denied_by
                    decision = _shadowed(decision, shadow, tokens, spend)
        except CountersUnavailable as exc:
            metrics.redis_error("reserve")
            if not conf.FAIL_OPEN:
                raise
            logger.warning("quotas: Redis unreachable (%s); budgets enforced from the ledger", exc)
            metrics.ledger_mode(True)
            result = await in_orm_thread(self._reserve_from_ledger)(
                user_id, quota, model, tokens, spend, record_denial
            )
            return _counted(result, started)
        metrics.ledger_mode(False)
        if not decision.allowed or decision.reservation is None:
            if record_denial:
                await in_orm_thread(self.record_denial)(user_id, decision, model)
            return _counted((decision, None), started)
        grant = Grant(
            user_id, model, decision, decision.reservation, quota=quota, shadowed=shadowed
        )
        return _counted((decision, grant), started)

    async def asettle(
        self,
        grant: Grant,
        *,
        prompt_tokens: int,
        completion_tokens: int,
        cost: int,
        model: str | None = None,
        cached_tokens: int = 0,
        reasoning_tokens: int = 0,
    ) -> None:
        """`settle`: the ledger row in a worker thread, the counters on `redis.asyncio`."""
        if grant.degraded or grant.org is not None:
            await in_orm_thread(self.settle)(
                grant,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                cost=cost,
                model=model,
                cached_tokens=cached_tokens,
                reasoning_tokens=reasoning_tokens,
            )
            return
        near = await in_orm_thread(self._book)(
            grant,
            model or grant.model,
            prompt_tokens,
            completion_tokens,
            cost,
            cached_tokens=cached_tokens,
            reasoning_tokens=reasoning_tokens,
            screen=True,
        )
        try:
            await get_async_engine().settle(
                grant.reservation, tokens=prompt_tokens + completion_tokens, spend=cost
            )
        except CountersUnavailable:
            metrics.redis_error("settle")
            logger.warning("quotas: Redis unreachable at settle; counters re-seed from the ledger")
            ledger_mode.mark_dirty(grant.user_id)
            return
        if near:
            await in_orm_thread(self.confirm_alerts)(grant)

    async def arefund(self, grant: Grant) -> None:
        if grant.degraded or grant.org is not None:
            await in_orm_thread(self.refund)(grant)
            return
        try:
            await get_async_engine().refund(grant.reservation)
        except CountersUnavailable:
            metrics.redis_error("refund")
            logger.warning("quotas: Redis unreachable at refund; the lease expires by itself")
            ledger_mode.mark_dirty(grant.user_id)

    def settle(
        self,
        grant: Grant,
        *,
        prompt_tokens: int,
        completion_tokens: int,
        cost: int,
        model: str | None = None,
        cached_tokens: int = 0,
        reasoning_tokens: int = 0,
    ) -> None:
        """Record the real usage in the ledger, then move the counters to it.

        `cached_tokens` and `reasoning_tokens` are the parts of the prompt and of the
        completion the provider reported as such; the counters count tokens whole.
        """
        details = {"cached_tokens": cached_tokens, "reasoning_tokens": reasoning_tokens}
        if grant.degraded:
            ledger_mode.settle_in_ledger(
                grant.user_id,
                grant.reservation,
                model or grant.model,
                requests=1,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                cost=cost,
                **details,
            )
            tier = grant.quota.tier_slug if grant.quota is not None else ""
            metrics.settled(model or grant.model, tier, prompt_tokens + completion_tokens, cost)
            if self.screen_alerts(grant, prompt_tokens + completion_tokens, cost):
                self.confirm_alerts(grant, prompt_tokens + completion_tokens, cost)
            return
        near = self._book(
            grant,
            model or grant.model,
            prompt_tokens,
            completion_tokens,
            cost,
            screen=True,
            **details,
        )
        try:
            self.engine.settle(
                grant.reservation, tokens=prompt_tokens + completion_tokens, spend=cost
            )
            if grant.org is not None:
                self.engine.settle(grant.org, tokens=0, spend=cost)
        except CountersUnavailable:
            metrics.redis_error("settle")
            logger.warning("quotas: Redis unreachable at settle; counters re-seed from the ledger")
            ledger_mode.mark_dirty(grant.user_id)
            return
        if near:
            self.confirm_alerts(grant)

    def refund(self, grant: Grant) -> None:
        """The call did not happen: give everything back."""
        if grant.degraded:
            ledger_mode.settle_in_ledger(
                grant.user_id,
                grant.reservation,
                grant.model,
                requests=0,
                prompt_tokens=0,
                completion_tokens=0,
                cost=0,
            )
            return
        try:
            self.engine.refund(grant.reservation)
            if grant.org is not None:
                self.engine.refund(grant.org)
        except CountersUnavailable:
            metrics.redis_error("refund")
            logger.warning("quotas: Redis unreachable at refund; the lease expires by itself")
            ledger_mode.mark_dirty(grant.user_id)

    # the provider's own limits -------------------------------------------------------

    def wait_for_provider(self, model: Any, tokens: int) -> None:
        """Take one request and `tokens` from `model`'s provider limits (and wait out its
        backoff), up to `UPSTREAM_MAX_WAIT`; raises UpstreamBusy when that is too long."""
        UpstreamLimiter(self.engine).acquire(
            model.name,
            model.upstream_requests_per_minute,
            model.upstream_tokens_per_minute,
            tokens,
            conf.UPSTREAM_MAX_WAIT,
        )

    def provider_backoff(self, model: str, seconds: float) -> None:
        """Hold every app server's calls to `model` for `seconds` (a provider's 429)."""
        UpstreamLimiter(self.engine).backoff(model, seconds)

    def recover(self) -> None:
        """After an outage, correct the counters of users served from the ledger meanwhile
        (see `correct_counters`); a user whose counters kept changing is tried again at
        the next decision."""
        if not ledger_mode.has_dirty():
            return
        users = ledger_mode.take_dirty()
        corrected = 0
        try:
            for user_id in users:
                corrected += self.correct_counters(user_id)
        except CountersUnavailable:
            for user_id in users:
                ledger_mode.mark_dirty(user_id)
            raise
        logger.info(
            "quotas: Redis is back; counters of %d users checked against the ledger", corrected
        )

    def correct_counters(self, user_id: int) -> bool:
        """Bring a user's day and month counters to the ledger plus what their
        reservations in flight hold, in place.

        Never dropped: another app server may be reserving against them, and a dropped
        counter, re-seeded from the ledger, would forget those reservations. Returns False
        (and the user is corrected again at the next decision) if the counters kept
        changing; raises `CountersUnavailable` (likewise) if Redis cannot be reached.
        """
        team_id = (
            UserQuota.objects.filter(user_id=user_id).values_list("team_id", flat=True).first()
        )
        try:
            with unavailable_on_error():
                checks = check_user(self.engine, user_id, "", fix=True)
                if team_id is not None:  # the team's counters missed the outage too
                    checks += check_team(self.engine, team_id, fix=True)
        except CountersUnavailable:
            ledger_mode.mark_dirty(user_id)
            raise
        if all(check.fixed or not check.drifted for check in checks):
            return True
        ledger_mode.mark_dirty(user_id)
        return False

    def reconcile(
        self, users: Iterable[tuple[int, str]], *, fix: bool = False
    ) -> Iterator[WindowCheck]:
        """Every user's counters against the ledger (see `quotas.reconcile`)."""
        with unavailable_on_error():
            yield from reconcile(self.engine, users, fix=fix)

    def policy_version(self) -> int:
        """A number every process compares to notice that limits changed."""
        return self.engine.policy_version()

    def bump_policy_version(self) -> int:
        return self.engine.bump_policy_version()

    def _book(
        self,
        grant: Grant,
        model: str,
        prompt_tokens: int,
        completion_tokens: int,
        cost: int,
        *,
        cached_tokens: int = 0,
        reasoning_tokens: int = 0,
        screen: bool = False,
    ) -> bool:
        """A settled call's ledger rows: the user's and each level's (team, key); then,
        with `screen`, whether it may have crossed an alert threshold."""
        amounts = {
            "requests": 1,
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "cached_tokens": cached_tokens,
            "reasoning_tokens": reasoning_tokens,
            "cost": from_micros(cost),
        }
        levels = (subject for subject, _rates in grant.reservation.levels)
        book(grant.user_id, levels, window_day(grant.reservation.day), model, **amounts)
        tier = grant.quota.tier_slug if grant.quota is not None else ""
        metrics.settled(model, tier, prompt_tokens + completion_tokens, cost)
        return screen and self.screen_alerts(grant, prompt_tokens + completion_tokens, cost)

    def screen_alerts(self, grant: Grant, tokens: int, cost: int) -> bool:
        """Whether a settled call may have crossed an alert threshold: its decision's limit
        states, moved to what it really used, near one not fired yet (in memory only)."""
        if grant.quota is None:
            return False
        held = grant.reservation
        delta = Usage(requests=0, tokens=tokens - held.tokens, spend=cost - held.spend)
        # The decision saw the other calls' reservations, not what they used: a call that
        # used more than it reserved may have moved the counters past a threshold that no
        # other call's view shows. Then every threshold not fired yet is read again.
        margin = alerts.NEAR_PERCENT
        if delta.tokens > 0 or delta.spend > 0:
            margin = alerts.EVERY_THRESHOLD
        try:
            found = alerts.crossings(
                grant.user_id, grant.quota, grant.decision, delta, margin=margin
            )
        except Exception:  # an alert never fails the call it is about
            logger.exception("quotas: alert rules of user %s could not be read", grant.user_id)
            return False
        return bool(found)

    def confirm_alerts(self, grant: Grant, tokens: int = 0, cost: int = 0) -> None:
        """Fire the alerts the counters, read again once the call is settled, show crossed
        (the ledger mode's: the decision moved by `tokens` and `cost`)."""
        quota = grant.quota
        if quota is None:
            return
        try:
            if grant.degraded:
                held = grant.reservation
                delta = Usage(requests=0, tokens=tokens - held.tokens, spend=cost - held.spend)
                found = alerts.crossings(grant.user_id, quota, grant.decision, delta)
            else:
                found = alerts.crossings(grant.user_id, quota, self.usage(grant.user_id, quota))
            if found:
                alerts.fire(found)
        except Exception:  # an alert never fails the call it is about
            logger.exception("quotas: alerts of user %s could not be stored", grant.user_id)

    def record_denial(self, user_id: int, decision: Decision, model: str) -> None:
        day = window_day(decision.day) if decision.day else None
        if day is None:
            return
        UsageRecord.add(user_id, day, model, denied=1)
        level, _, _limit = (decision.denied_by or "").partition(".")
        subjects = decision.level_subjects
        if level in subjects:  # a team or key limit refused: its ledger counts it too
            LevelUsage.add(ledger_level(subjects[level]), day, model, denied=1)

    # reading ------------------------------------------------------------------------

    def team_usage(self, team_id: int, quota: Quota) -> Decision:
        """Where every limit of a team stands (`quota`: the team's own), charging nothing."""
        return self.engine.peek(
            team_subject(team_id), quota.policy(), now=self._now(), seeder=_seed_from_ledger
        )

    def usage(self, user_id: int, quota: Quota) -> Decision:
        """Where every limit of a user stands, charging nothing."""
        self.recover()
        subject = quota.subject(user_id)
        return self.engine.peek(
            subject,
            quota.policy(),
            now=self._now(),
            seeder=_seed_from_ledger,
            levels=quota.levels(subject),
        )


service = QuotaService()
