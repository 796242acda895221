"""Reading the ledger: what a window holds once settled usage and staff adjustments are summed."""

from __future__ import annotations

from datetime import date, datetime

from django.db.models import Sum

from .engine import Usage, Window
from .models import QuotaAdjustment, UsageRecord
from .policy import to_micros


def window_day(window: Window) -> date:
    """The date of a day window (for a month window: its first day)."""
    label = window.label if window.kind == "d" else window.label + "01"
    return datetime.strptime(label, "%Y%m%d").date()


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
    """What the ledger holds for a window (all users if `user_id` is None): settled usage
    less staff adjustments (which apply to day windows)."""
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
