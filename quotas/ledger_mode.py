"""Budgets enforced from the database ledger while Redis is unreachable.

Slower than Redis (a row lock and a few queries per request) but money stays guarded:
each user's reservations are serialised on their user row, the worst case is written to
the ledger at once, and settling moves it to the real usage. Request rates and
concurrency are not enforced here; `QUOTAS["FAIL_OPEN"]` decides whether those pass.
When Redis answers again, the counters of every user served this way are dropped so they
are re-seeded from the ledger.
"""

from __future__ import annotations

import threading
import time

from django.contrib.auth import get_user_model
from django.db import transaction

from .engine import Decision, LimitState, Reservation, current_windows
from .ledger import ledger_usage, window_day
from .models import UsageRecord
from .policy import Quota, from_micros, to_micros

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
    with transaction.atomic():
        # One reservation at a time per user, across every app server.
        list(get_user_model().objects.select_for_update().filter(pk=user_id).values("pk"))
        used_day = ledger_usage(user_id, day)
        used_month = ledger_usage(user_id, month)
        spend_cap = None if quota.spend_per_month is None else to_micros(quota.spend_per_month)
        checks = [
            ("requests_per_day", "dr", quota.requests_per_day, used_day.requests, 1, day),
            ("tokens_per_day", "dt", quota.tokens_per_day, used_day.tokens, tokens, day),
            ("tokens_per_month", "mt", quota.tokens_per_month, used_month.tokens, tokens, month),
            ("spend_per_month", "ms", spend_cap, used_month.spend, spend, month),
        ]
        if org_cap is not None:
            org_used = ledger_usage(None, month).spend
            checks.append(("org_spend_per_month", "ms", org_cap, org_used, spend, month))
        for name, code, limit, used, ask, window in checks:
            if limit is None:
                continue
            reset = (window.end_us - now_us) / 1_000_000
            states.append(LimitState(name, code, limit, used, max(0, limit - used - ask), reset))
            if used + ask > limit and (denied is None or reset > denied[1]):
                denied = (name, reset)
        day_date = window_day(day)
        if denied is None:
            UsageRecord.add(
                user_id,
                day_date,
                model,
                requests=1,
                prompt_tokens=tokens,
                cost=from_micros(spend),
            )
        elif record_denial:
            UsageRecord.add(user_id, day_date, model, denied=1)
    mark_dirty(user_id)
    reservation = None
    if denied is None:
        reservation = Reservation(
            id="ledger",
            subject=f"u:{user_id}",
            requests=1,
            tokens=tokens,
            spend=spend,
            day=day,
            month=month,
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
    """Move the worst case recorded at reservation to the real usage."""
    UsageRecord.add(
        user_id,
        window_day(reservation.day),
        model,
        requests=requests - reservation.requests,
        prompt_tokens=prompt_tokens - reservation.tokens,
        completion_tokens=completion_tokens,
        cached_tokens=cached_tokens,
        reasoning_tokens=reasoning_tokens,
        cost=from_micros(cost) - from_micros(reservation.spend),
    )
    mark_dirty(user_id)
