"""Staff actions on a user's day: a reset or a boost, kept in the ledger, effective at once."""

from __future__ import annotations

import logging
import time
from typing import Any

from django.db import transaction

from .conf import conf
from .engine import CountersUnavailable, current_windows
from .engine.engine import unavailable_on_error
from .engine_factory import get_engine
from .ledger import ledger_usage, window_day
from .models import QuotaAdjustment
from .subjects import user_subject

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

    The row goes into the ledger; the user's day counters are then dropped from Redis, so
    the next request re-seeds them from the ledger less every adjustment of the day. They
    are dropped again once the row is committed, in case a request re-seeded them in
    between. Raises `CountersUnavailable` (the row is kept) if Redis cannot be reached.
    """
    engine = get_engine()
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
    key = engine.window_key(user_subject(user_id), day_window)

    def drop() -> None:
        with unavailable_on_error():
            engine.client.delete(key)

    def drop_after_commit() -> None:
        try:
            drop()
        except CountersUnavailable:
            logger.warning("quotas: Redis unreachable; adjustment %s waits", adjustment.pk)

    transaction.on_commit(drop_after_commit)
    drop()
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
    """Give back what the user used today (boosts still unused are kept)."""
    day_window, _ = current_windows(int(time.time() * 1_000_000), conf.TIME_ZONE)
    used = ledger_usage(user_id, day_window)
    return apply_adjustment(
        user_id,
        kind=QuotaAdjustment.RESET,
        requests=max(0, used.requests),
        tokens=max(0, used.tokens),
        created_by=created_by,
        reason=reason,
    )
