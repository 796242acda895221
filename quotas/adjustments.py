"""Staff actions on a user's day: a reset or a boost, kept in the ledger, effective at once."""

from __future__ import annotations

import logging
import time
from typing import Any

from django.db import transaction
from django.db.models import Sum

from .conf import conf
from .engine import current_windows
from .ledger import ledger_usage, window_day
from .models import QuotaAdjustment
from .services import service

logger = logging.getLogger("quotas")


# The counters hold exact integers only below 2**53 (Lua numbers are doubles).
MAX_BOOST = 10**12


def apply_adjustment(
    user_id: int,
    *,
    kind: str,
    requests: int = 0,
    tokens: int = 0,
    created_by: Any = None,
    reason: str = "",
) -> QuotaAdjustment:
    """Give a user back `requests` and `tokens` for today, effective at once.

    The row goes into the ledger; once it is committed, the user's counters are corrected
    to the ledger (less every adjustment of the day) plus what their calls in flight hold.
    Correcting rather than dropping keeps those reservations counted. Raises
    `CountersUnavailable` (the row is kept, and the counters are corrected when Redis
    answers again) if Redis cannot be reached.
    """
    day_window, _ = current_windows(int(time.time() * 1_000_000), conf.TIME_ZONE)
    adjustment = QuotaAdjustment.objects.create(
        user_id=user_id,
        day=window_day(day_window),
        kind=kind,
        requests=requests,
        tokens=tokens,
        created_by=created_by,
        reason=reason[:200],
    )
    transaction.on_commit(lambda: service.correct_counters(user_id))
    return adjustment


def grant_boost(
    user_id: int, *, tokens: int = 0, requests: int = 0, created_by: Any = None, reason: str = ""
) -> QuotaAdjustment:
    """Extra tokens and requests for the rest of today."""
    if tokens < 0 or requests < 0 or not (tokens or requests):
        raise ValueError("A boost adds a positive number of tokens or requests.")
    if tokens > MAX_BOOST or requests > MAX_BOOST:
        raise ValueError(f"A boost adds at most {MAX_BOOST:,} tokens or requests.")
    return apply_adjustment(
        user_id,
        kind=QuotaAdjustment.BOOST,
        tokens=tokens,
        requests=requests,
        created_by=created_by,
        reason=reason,
    )


def reset_today(user_id: int, *, created_by: Any = None, reason: str = "") -> QuotaAdjustment:
    """Give back what the user used today: their day counts from 0 again, and today's
    boosts still raise its limits."""
    day_window, _ = current_windows(int(time.time() * 1_000_000), conf.TIME_ZONE)
    used = ledger_usage(user_id, day_window)  # less every adjustment of the day
    boosts = QuotaAdjustment.objects.filter(
        user_id=user_id, day=window_day(day_window), kind=QuotaAdjustment.BOOST
    ).aggregate(requests=Sum("requests"), tokens=Sum("tokens"))
    return apply_adjustment(
        user_id,
        kind=QuotaAdjustment.RESET,
        requests=max(0, used.requests + (boosts["requests"] or 0)),
        tokens=max(0, used.tokens + (boosts["tokens"] or 0)),
        created_by=created_by,
        reason=reason,
    )
