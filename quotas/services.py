"""The quota service: reserve before the provider call, settle after, keep the ledger."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import date, datetime

from django.db.models import Sum

from .conf import conf
from .counters import get_engine
from .engine import (
    CountersUnavailable,
    Decision,
    Limit,
    Policy,
    QuotaEngine,
    Reservation,
    Usage,
    Window,
)
from .engine import limits as codes
from .models import QuotaAdjustment, UsageRecord
from .policy import Quota, from_micros, to_micros

logger = logging.getLogger("quotas")

ORG_SUBJECT = "org"


class Blocked(Exception):
    """The user's quota is blocked by staff."""


def user_subject(user_id: int) -> str:
    return f"u:{user_id}"


def window_day(window: Window) -> date:
    return datetime.strptime(window.label, "%Y%m%d").date()


def window_days(window: Window) -> tuple[date, date]:
    """First and last day of a day or month window."""
    if window.kind == "d":
        day = window_day(window)
        return day, day
    first = datetime.strptime(window.label + "01", "%Y%m%d").date()
    index = first.year * 12 + first.month
    following = date(index // 12, index % 12 + 1, 1)
    return first, date.fromordinal(following.toordinal() - 1)


def ledger_usage(user_id: int | None, window: Window) -> Usage:
    """What the ledger holds for a window: settled usage less staff adjustments."""
    first, last = window_days(window)
    rows = UsageRecord.objects.filter(day__gte=first, day__lte=last)
    if user_id is not None:
        rows = rows.filter(user_id=user_id)
    totals = rows.aggregate(
        requests=Sum("requests"),
        prompt=Sum("prompt_tokens"),
        completion=Sum("completion_tokens"),
        cost=Sum("cost"),
    )
    requests = totals["requests"] or 0
    tokens = (totals["prompt"] or 0) + (totals["completion"] or 0)
    if window.kind == "d" and user_id is not None:
        given = QuotaAdjustment.objects.filter(user_id=user_id, day=first).aggregate(
            requests=Sum("requests"), tokens=Sum("tokens")
        )
        requests -= given["requests"] or 0
        tokens -= given["tokens"] or 0
    return Usage(requests=requests, tokens=tokens, spend=to_micros(totals["cost"] or 0))


def _seed_from_ledger(subject: str, window: Window) -> Usage:
    if subject == ORG_SUBJECT:
        return replace(ledger_usage(None, window), requests=0, tokens=0)
    if subject.startswith("u:"):
        return ledger_usage(int(subject[2:]), window)
    return Usage()


@dataclass(frozen=True)
class Grant:
    """A granted reservation for one AI call, to settle or refund."""

    user_id: int
    model: str
    decision: Decision
    reservation: Reservation
    org: Reservation | None = None


class QuotaService:
    """Decisions for users and anonymous callers; Redis for speed, the ledger as record."""

    def __init__(self, engine: QuotaEngine | None = None) -> None:
        self._engine = engine

    @property
    def engine(self) -> QuotaEngine:
        return self._engine or get_engine()

    # plain request limits (DRF throttle) --------------------------------------------

    def check_request(self, subject: str, quota: Quota, *, track_usage: bool) -> Decision:
        """Charge one request against the request limits of `quota` (rate, burst, per day)."""
        policy = quota.policy(budgets=False, track_usage=track_usage)
        return self.engine.reserve(subject, policy, seeder=_seed_from_ledger)

    # AI calls -----------------------------------------------------------------------

    def reserve(
        self,
        user_id: int,
        quota: Quota,
        *,
        model: str,
        tokens: int,
        spend: int,
    ) -> tuple[Decision, Grant | None]:
        """Reserve one request, `tokens` and `spend` (micro-USD) with a concurrency lease.

        A denied reservation charges nothing and is counted in the ledger.
        """
        if quota.blocked:
            raise Blocked()
        engine = self.engine
        decision = engine.reserve(
            user_subject(user_id),
            quota.policy(),
            tokens=tokens,
            spend=spend,
            lease=True,
            lease_seconds=conf.LEASE_SECONDS,
            seeder=_seed_from_ledger,
        )
        if not decision.allowed or decision.reservation is None:
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
                self.record_denial(user_id, denied, model)
                return denied, None
            org = org_decision.reservation
        grant = Grant(user_id, model, decision, decision.reservation, org)
        return decision, grant

    def settle(
        self,
        grant: Grant,
        *,
        prompt_tokens: int,
        completion_tokens: int,
        cost: int,
        model: str | None = None,
    ) -> None:
        """Record the real usage in the ledger, then move the counters to it."""
        UsageRecord.add(
            grant.user_id,
            window_day(grant.reservation.day),
            model or grant.model,
            requests=1,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            cost=from_micros(cost),
        )
        try:
            self.engine.settle(
                grant.reservation, tokens=prompt_tokens + completion_tokens, spend=cost
            )
            if grant.org is not None:
                self.engine.settle(grant.org, tokens=0, spend=cost)
        except CountersUnavailable:
            logger.warning("quotas: Redis unreachable at settle; counters re-seed from the ledger")

    def refund(self, grant: Grant) -> None:
        """The call did not happen: give everything back."""
        try:
            self.engine.refund(grant.reservation)
            if grant.org is not None:
                self.engine.refund(grant.org)
        except CountersUnavailable:
            logger.warning("quotas: Redis unreachable at refund; the lease expires by itself")

    def record_denial(self, user_id: int, decision: Decision, model: str) -> None:
        day = window_day(decision.day) if decision.day else None
        if day is not None:
            UsageRecord.add(user_id, day, model, denied=1)

    # reading ------------------------------------------------------------------------

    def usage(self, user_id: int, quota: Quota) -> Decision:
        """Where every limit of a user stands, charging nothing."""
        return self.engine.peek(user_subject(user_id), quota.policy(), seeder=_seed_from_ledger)


service = QuotaService()
