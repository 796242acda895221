"""Budgets enforced from the database ledger while Redis is unreachable.

Slower than Redis (a row lock and a few queries per request) but money stays guarded:
each user's reservations are serialised on their user row, the worst case is written to
the ledger at once, and settling moves it to the real usage. Request rates and
concurrency are not enforced here; `QUOTAS["FAIL_OPEN"]` decides whether those pass.
When Redis answers again, the counters of every user served this way are corrected to the
ledger plus their reservations in flight (see `QuotaService.recover`).
"""

from __future__ import annotations

import threading
import time

from django.contrib.auth import get_user_model
from django.db import transaction

from .engine import Decision, LimitState, Reservation, Usage, current_windows
from .ledger import book, ledger_usage, usage_of, window_day
from .limit_kinds import BUDGETS, ORG_SPEND_PER_MONTH, LimitKind, kind_of
from .models import Team, UsageRecord
from .money import from_micros
from .policy import Quota
from .subjects import ledger_level

_dirty_lock = threading.Lock()
_dirty_users: set[int] = set()


def mark_dirty(user_id: int) -> None:
    with _dirty_lock:
        _dirty_users.add(user_id)


def take_dirty() -> set[int]:
    """Users whose Redis counters missed usage recorded during an outage."""
    with _dirty_lock:
        users = set(_dirty_users)
        _dirty_users.clear()
    return users


def has_dirty() -> bool:
    return bool(_dirty_users)


def reserve_from_ledger(
    user_id: int,
    quota: Quota,
    *,
    model: str,
    tokens: int,
    spend: int,
    time_zone: str,
    org_cap: int | None,
    record_denial: bool = True,
) -> Decision:
    """Check the day and month budgets against the ledger and record the worst case
    (and a denial, unless `record_denial` is off)."""
    now_us = int(time.time() * 1_000_000)
    day, month = current_windows(now_us, time_zone)
    states: list[LimitState] = []
    denied: tuple[str, float] | None = None
    subject = quota.subject(user_id)
    levels = quota.levels(subject)
    with transaction.atomic():
        # One reservation at a time per team, then per user, across every app server.
        if quota.team_id is not None:
            list(Team.objects.select_for_update().filter(pk=quota.team_id).values("pk"))
        list(get_user_model().objects.select_for_update().filter(pk=user_id).values("pk"))
        ask = Usage(requests=1, tokens=tokens, spend=spend)
        sums: dict[tuple[str, str], Usage] = {}  # each window of each level, summed once

        def summed(level: str, period: str) -> Usage:
            if (level, period) not in sums:
                sums[level, period] = usage_of(level, day if period == "day" else month)
            return sums[level, period]

        checks: list[tuple[str, LimitKind, int, Usage]] = []
        for kind in BUDGETS:
            value = getattr(quota, kind.field)
            if value is not None:
                used_in = summed(f"u:{user_id}", kind.period)
                checks.append((kind.field, kind, kind.engine_amount(value), used_in))
        for level in levels:
            for level_limit in level.policy.limits:
                kind = kind_of(level_limit.name, level_limit.code)
                if kind.is_budget:
                    used_in = summed(ledger_level(level.subject), kind.period)
                    name = f"{level.name}.{level_limit.name}"
                    checks.append((name, kind, level_limit.amount, used_in))
        if org_cap is not None:
            org = ledger_usage(None, month)
            checks.append((ORG_SPEND_PER_MONTH.field, ORG_SPEND_PER_MONTH, org_cap, org))
        for name, kind, limit, used_in in checks:
            used, asked = kind.amount_of(used_in), kind.amount_of(ask)
            window = day if kind.period == "day" else month
            reset = (window.end_us - now_us) / 1_000_000
            states.append(
                LimitState(name, kind.code, limit, used, max(0, limit - used - asked), reset)
            )
            if used + asked > limit and (denied is None or reset > denied[1]):
                denied = (name, reset)
        day_date = window_day(day)
        if denied is None:
            amounts = {"requests": 1, "prompt_tokens": tokens, "cost": from_micros(spend)}
            book(user_id, (level.subject for level in levels), day_date, model, **amounts)
        elif record_denial:
            UsageRecord.add(user_id, day_date, model, denied=1)
    mark_dirty(user_id)
    reservation = None
    if denied is None:
        reservation = Reservation(
            id="ledger",
            subject=subject,
            requests=1,
            tokens=tokens,
            spend=spend,
            day=day,
            month=month,
            levels=tuple((level.subject, ()) for level in levels),
        )
    return Decision(
        allowed=denied is None,
        denied_by=None if denied is None else denied[0],
        retry_after=0.0 if denied is None else max(1.0, denied[1]),
        now_us=now_us,
        states=tuple(states),
        reservation=reservation,
        day=day,
        month=month,
        reasons=() if denied is None else (denied[0],),
    )


def settle_in_ledger(
    user_id: int,
    reservation: Reservation,
    model: str,
    *,
    requests: int,
    prompt_tokens: int,
    completion_tokens: int,
    cost: int,
    cached_tokens: int = 0,
    reasoning_tokens: int = 0,
) -> None:
    """Move the worst case recorded at reservation to the real usage (the user's row and
    each level's)."""
    amounts = {
        "requests": requests - reservation.requests,
        "prompt_tokens": prompt_tokens - reservation.tokens,
        "completion_tokens": completion_tokens,
        "cached_tokens": cached_tokens,
        "reasoning_tokens": reasoning_tokens,
        "cost": from_micros(cost) - from_micros(reservation.spend),
    }
    levels = (subject for subject, _rates in reservation.levels)
    book(user_id, levels, window_day(reservation.day), model, **amounts)
    mark_dirty(user_id)
