"""Reading the ledger: what a window holds once settled usage and staff adjustments are summed."""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import date
from typing import Any

from django.contrib.auth import get_user_model
from django.db.models import F, Q, QuerySet, Sum

from .conf import conf
from .engine import Usage, Window, current_windows
from .models import LevelUsage, QuotaAdjustment, UsageRecord
from .money import from_micros, to_micros
from .subjects import ledger_level, team_subject


def window_day(window: Window) -> date:
    """The date of a day window (for a month window: its first day)."""
    label = window.label  # "YYYYMMDD" or "YYYYMM"
    return date(int(label[:4]), int(label[4:6]), int(label[6:8] or 1))


def window_days(window: Window) -> tuple[date, date]:
    """First and last day of a day or month window."""
    if window.kind == "d":
        day = window_day(window)
        return day, day
    first = window_day(window)
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


def ledger_usages(
    user_ids: Iterable[int], day: Window, month: Window
) -> dict[tuple[int, str], Usage]:
    """`ledger_usage` of many users for the current day and month, in two queries: by
    (user id, window label)."""
    ids = list(user_ids)
    first, last = window_days(month)
    today = window_day(day)
    if not first <= today <= last:
        return {}  # a day of another month: read one by one
    on_day = Q(day=today)
    tokens = F("prompt_tokens") + F("completion_tokens")
    rows = list(
        UsageRecord.objects.filter(user_id__in=ids, day__gte=first, day__lte=last)
        .values("user_id")
        .annotate(
            m_requests=Sum("requests"),
            m_tokens=Sum(tokens),
            m_cost=Sum("cost"),
            d_requests=Sum("requests", filter=on_day),
            d_tokens=Sum(tokens, filter=on_day),
            d_cost=Sum("cost", filter=on_day),
        )
    )
    given: dict[int, dict[str, Any]] = {
        row["user_id"]: dict(row)
        for row in QuotaAdjustment.objects.filter(user_id__in=ids, day=today)
        .values("user_id")
        .annotate(a_requests=Sum("requests"), a_tokens=Sum("tokens"))
    }
    out = {(user_id, w.label): Usage() for user_id in ids for w in (day, month)}
    for row in rows:
        user_id = row["user_id"]
        adjusted: dict[str, Any] = given.get(user_id, {})
        out[(user_id, month.label)] = Usage(
            row["m_requests"] or 0, row["m_tokens"] or 0, to_micros(row["m_cost"] or 0)
        )
        out[(user_id, day.label)] = Usage(
            (row["d_requests"] or 0) - (adjusted.get("a_requests") or 0),
            (row["d_tokens"] or 0) - (adjusted.get("a_tokens") or 0),
            to_micros(row["d_cost"] or 0),
        )
    used = {row["user_id"] for row in rows}
    for user_id, adjusted in given.items():  # adjusted with no usage in the month
        if user_id not in used:
            out[(user_id, day.label)] = Usage(
                -(adjusted["a_requests"] or 0), -(adjusted["a_tokens"] or 0), 0
            )
    return out


def book(
    user_id: int, level_subjects: Iterable[str], day: date, model: str, **amounts: Any
) -> None:
    """Add a call's amounts to the ledger: the user's row and the row of each level
    (team, key) it was charged to, named by their subjects."""
    UsageRecord.add(user_id, day, model, **amounts)
    for subject in level_subjects:
        LevelUsage.add(ledger_level(subject), day, model, **amounts)


def level_usage(level: str, window: Window) -> Usage:
    """What the ledger holds for a team ("t:5") or a key ("k:abc") in a window."""
    first, last = window_days(window)
    totals = LevelUsage.objects.filter(level=level, day__gte=first, day__lte=last).aggregate(
        requests=Sum("requests"),
        prompt=Sum("prompt_tokens"),
        completion=Sum("completion_tokens"),
        cost=Sum("cost"),
    )
    tokens = (totals["prompt"] or 0) + (totals["completion"] or 0)
    return Usage(totals["requests"] or 0, tokens, to_micros(totals["cost"] or 0))


def team_usage(team_id: int) -> dict[str, Any]:
    """A team's usage today and this month, from the ledger (spend in USD)."""
    day, month = current_windows(int(time.time() * 1_000_000), conf.TIME_ZONE)
    out = {}
    for name, window in (("today", day), ("this_month", month)):
        used = level_usage(team_subject(team_id), window)
        out[name] = {
            "period": window.label,
            "requests": used.requests,
            "tokens": used.tokens,
            "spend": str(from_micros(used.spend)),
        }
    return out


def usage_of(level: str, window: Window) -> Usage:
    """What the ledger holds for a user ("u:42"), a team or a key in a window."""
    if level.startswith("u:"):
        return ledger_usage(int(level[2:]), window)
    if level.startswith(("t:", "k:")):
        return level_usage(level, window)
    return Usage()


def today() -> tuple[date, date, date]:
    """(today, first and last day of this month) in the quota time zone."""
    day, month = current_windows(int(time.time() * 1_000_000), conf.TIME_ZONE)
    return window_day(day), *window_days(month)


def ledger_rows(
    *,
    user_id: int | None = None,
    date_from: date | None = None,
    date_to: date | None = None,
    model: str | None = None,
    group_by: tuple[str, ...] = ("day",),
) -> list[dict[str, Any]]:
    """Ledger sums grouped by any of "day", "user", "model"; in that order, newest day first."""
    return list(
        ledger_query(
            user_id=user_id, date_from=date_from, date_to=date_to, model=model, group_by=group_by
        )
    )


def ledger_filter(
    *,
    user_id: int | None = None,
    date_from: date | None = None,
    date_to: date | None = None,
    model: str | None = None,
) -> QuerySet[UsageRecord]:
    """The ledger rows of a user, a date range and a model (each optional)."""
    rows = UsageRecord.objects.all()
    if user_id is not None:
        rows = rows.filter(user_id=user_id)
    if date_from is not None:
        rows = rows.filter(day__gte=date_from)
    if date_to is not None:
        rows = rows.filter(day__lte=date_to)
    if model:
        rows = rows.filter(model=model)
    return rows


# The total first: annotated after them, the field names would be the sums' own.
SUMS = {
    "total_tokens": Sum(F("prompt_tokens") + F("completion_tokens")),
    "requests": Sum("requests"),
    "prompt_tokens": Sum("prompt_tokens"),
    "completion_tokens": Sum("completion_tokens"),
    "cached_tokens": Sum("cached_tokens"),
    "reasoning_tokens": Sum("reasoning_tokens"),
    "cost": Sum("cost"),
    "denied": Sum("denied"),
}


def ledger_query(
    *, group_by: tuple[str, ...] = ("day",), **filters: Any
) -> QuerySet[UsageRecord, dict[str, Any]]:
    """`ledger_rows` as one lazy query (to page through, or to stream)."""
    rows = ledger_filter(**filters)
    columns = {"day": "day", "user": "user_id", "model": "model"}
    keys = [columns[name] for name in ("day", "user", "model") if name in group_by]
    if "user" in group_by:
        username = f"user__{get_user_model().USERNAME_FIELD}"
        rows = rows.annotate(username=F(username))
        keys.append("username")
    order = [f"-{k}" if k == "day" else k for k in keys]
    grouped: QuerySet[UsageRecord, dict[str, Any]] = rows.values(*keys)
    return grouped.annotate(**SUMS).order_by(*order)


def token_details(user_id: int | None, window: Window | None) -> dict[str, int]:
    """The cached prompt tokens and the reasoning tokens of a user's (all users' if
    `user_id` is None) settled calls in a window: the parts of their prompt and completion
    tokens the provider named."""
    if window is None:
        return {}
    first, last = window_days(window)
    rows = UsageRecord.objects.filter(day__gte=first, day__lte=last)
    if user_id is not None:
        rows = rows.filter(user_id=user_id)
    totals = rows.aggregate(
        cached_tokens=Sum("cached_tokens"), reasoning_tokens=Sum("reasoning_tokens")
    )
    return {name: value or 0 for name, value in totals.items()}
