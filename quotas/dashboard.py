"""Figures for the usage dashboard: live limits through the service, history from the ledger."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from django.contrib.auth import get_user_model
from django.core.paginator import Page, Paginator
from django.db.models import F, Q, Sum
from django.utils.html import format_html, format_html_join

from . import ledger, services
from .charts import Chart, bar_chart, usd
from .engine import CountersUnavailable, Decision
from .limit_kinds import BY_FIELD
from .money import from_micros
from .policy import quota_for_team, quota_for_user

NEAR_PERCENT = 80
PER_PAGE = 50
ALERT_SCAN = 200  # users with usage this month whose live counters are checked for alerts
TOP = 10
HISTORY_DAYS = 30

# The users table's columns, in order.
METERS = tuple(
    BY_FIELD[name]
    for name in (
        "requests_per_day",
        "tokens_per_day",
        "spend_per_day",
        "tokens_per_month",
        "spend_per_month",
        "requests_per_minute",
        "tokens_per_minute",
        "max_concurrent_requests",
    )
)


@dataclass(frozen=True)
class Meter:
    """One limit (or an unlimited figure) as a bar: used against limit."""

    name: str
    label: str
    used: str
    limit: str | None  # None: unlimited
    percent: int | None
    level: str  # "ok", "near", "over" or "free" (no limit)

    @property
    def width(self) -> int:
        return min(100, self.percent or 0)


def _meter(name: str, label: str, is_money: bool, used: int | None, limit: int | None) -> Meter:
    def show(value: int) -> str:
        return usd(from_micros(value)) if is_money else f"{value:,}"

    if limit is None:
        return Meter(name, label, "" if used is None else show(used), None, None, "free")
    used = used or 0
    percent = 100 if limit == 0 else used * 100 // limit
    level = "over" if used >= limit else "near" if percent >= NEAR_PERCENT else "ok"
    return Meter(name, label, show(used), show(limit), percent, level)


def meters(decision: Decision) -> list[Meter]:
    out = []
    for kind in METERS:
        state = next((s for s in decision.states if s.name == kind.field), None)
        if state is not None:
            out.append(_meter(kind.field, kind.label, kind.is_money, state.used, state.limit))
        elif kind.is_budget:
            usage = decision.day_usage if kind.period == "day" else decision.month_usage
            out.append(_meter(kind.field, kind.label, kind.is_money, kind.amount_of(usage), None))
        else:
            out.append(_meter(kind.field, kind.label, False, None, None))
    return out


@dataclass
class Panel:
    """A user's live standing against every limit of their quota."""

    user: Any
    tier: str
    blocked: bool
    meters: list[Meter] = field(default_factory=list)
    error: str = ""
    chart: Chart | None = None
    spend_chart: Chart | None = None

    @property
    def alerts(self) -> list[Meter]:
        return [m for m in self.meters if m.level in ("near", "over")]


UNREACHABLE = "The quota counters (Redis) are unreachable; live figures are missing."


def user_panel(user: Any, *, history: bool = False, live: bool = True) -> Panel:
    """`live=False` skips Redis (known to be down) and leaves the live figures out."""
    quota = quota_for_user(user)
    panel = Panel(user, quota.tier_name, quota.blocked)
    try:
        if not live:
            raise CountersUnavailable()
        panel.meters = meters(services.service.usage(user.pk, quota))
    except CountersUnavailable:
        panel.error = UNREACHABLE
    if history:
        days, rows = _history({"user_id": user.pk})
        panel.chart = bar_chart(days, [r["total_tokens"] for r in rows], "tokens")
        panel.spend_chart = bar_chart(days, [r["cost"] for r in rows], "spend", money=True)
    return panel


def team_standing(team: Any) -> str:
    """A team's limits as meters (live from Redis), for its admin page."""
    quota = quota_for_team(team)
    try:
        decision = services.service.team_usage(team.pk, quota)
    except CountersUnavailable:
        return UNREACHABLE
    rows = [
        format_html(
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            meter.label,
            meter.used or "0",
            "unlimited" if meter.limit is None else f"{meter.limit} ({meter.percent}%)",
        )
        for meter in meters(decision)
    ]
    head = format_html("<tr><th>{}</th><th>{}</th><th>{}</th></tr>", "Limit", "Used", "Of")
    return format_html(
        "<table>{}{}</table>", head, format_html_join("", "{}", ((r,) for r in rows))
    )


def _history(filters: dict[str, Any]) -> tuple[list[date], list[dict[str, Any]]]:
    """The last HISTORY_DAYS days and the ledger's sums for each (zeros where none)."""
    today, _, _ = ledger.today()
    days = [today - timedelta(days=n) for n in range(HISTORY_DAYS - 1, -1, -1)]
    by_day = {
        row["day"]: row for row in ledger.ledger_rows(date_from=days[0], date_to=today, **filters)
    }
    empty = {"requests": 0, "total_tokens": 0, "cost": Decimal(0), "denied": 0}
    return days, [by_day.get(day, empty) for day in days]


def _sparklines(user_ids: list[int]) -> dict[int, Chart]:
    today, _, _ = ledger.today()
    first = today - timedelta(days=HISTORY_DAYS - 1)
    days = [first + timedelta(days=n) for n in range(HISTORY_DAYS)]
    tokens: dict[int, dict[date, int]] = {uid: {} for uid in user_ids}
    for row in ledger.ledger_rows(date_from=first, date_to=today, group_by=("day", "user")):
        if row["user_id"] in tokens:
            tokens[row["user_id"]][row["day"]] = row["total_tokens"]
    return {
        uid: bar_chart(days, [per_day.get(d, 0) for d in days], "tokens", small=True)
        for uid, per_day in tokens.items()
    }


def users_by_usage(first: date, last: date, search: str = "") -> Any:
    """Every user, those with usage in [first, last] first (by spend, then requests)."""
    User = get_user_model()
    in_period = Q(usage_records__day__gte=first, usage_records__day__lte=last)
    users = User.objects.annotate(
        period_cost=Sum("usage_records__cost", filter=in_period),
        period_requests=Sum("usage_records__requests", filter=in_period),
    )
    if search:
        users = users.filter(**{f"{User.USERNAME_FIELD}__icontains": search})
    return users.order_by(
        F("period_cost").desc(nulls_last=True),
        F("period_requests").desc(nulls_last=True),
        User.USERNAME_FIELD,
    )


def _shown(row: dict[str, Any]) -> dict[str, Any]:
    """A ledger row with its figures formatted for display."""
    return {
        **row,
        "requests_display": f"{row['requests']:,}",
        "tokens_display": f"{row['tokens'] if 'tokens' in row else row['total_tokens']:,}",
        "cached_display": f"{row.get('cached_tokens', 0):,}",
        "reasoning_display": f"{row.get('reasoning_tokens', 0):,}",
        "cost_display": usd(row["cost"]),
    }


def _totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return _shown(
        {
            "requests": sum(r["requests"] for r in rows),
            "tokens": sum(r["total_tokens"] for r in rows),
            "cached_tokens": sum(r["cached_tokens"] for r in rows),
            "reasoning_tokens": sum(r["reasoning_tokens"] for r in rows),
            "cost": sum((r["cost"] for r in rows), Decimal(0)),
            "denied": sum(r["denied"] for r in rows),
        }
    )


def dashboard(page_number: Any = 1, search: str = "") -> dict[str, Any]:
    """Everything the dashboard shows, for one page of users."""
    today, first, last = ledger.today()
    month_rows = ledger.ledger_rows(date_from=first, date_to=last, group_by=("user",))
    today_rows = ledger.ledger_rows(date_from=today, date_to=today, group_by=("user",))

    panels: dict[int, Panel] = {}

    def panel(user: Any) -> Panel:
        if user.pk not in panels:
            live = not any(p.error for p in panels.values())  # one timeout, not one per user
            panels[user.pk] = user_panel(user, live=live)
        return panels[user.pk]

    by_spend = sorted(month_rows, key=lambda r: (r["cost"], r["requests"]), reverse=True)
    active = [r["user_id"] for r in by_spend if r["requests"] or r["denied"]][:ALERT_SCAN]
    alerts = []
    for user in get_user_model().objects.in_bulk(active).values():
        alerts += [(panel(user), meter) for meter in panel(user).alerts]
    alerts.sort(key=lambda pair: (pair[1].level != "over", -(pair[1].percent or 0)))

    page: Page[Any] = Paginator(users_by_usage(first, last, search), PER_PAGE).get_page(page_number)
    sparklines = _sparklines([u.pk for u in page.object_list])
    rows = [(panel(u), sparklines[u.pk]) for u in page.object_list]

    days, site = _history({})
    month_total = _totals(month_rows)
    top = [_shown(r) for r in by_spend if r["requests"]][:TOP]
    for row in top:
        share = row["cost"] * 100 / month_total["cost"] if month_total["cost"] else 0
        row["share"] = int(share)
    denied = sorted((r for r in month_rows if r["denied"]), key=lambda r: -r["denied"])[:TOP]
    denied_today = {r["user_id"]: r["denied"] for r in today_rows}
    for row in denied:
        row["today"] = denied_today.get(row["user_id"], 0)
    return {
        "today": today,
        "month_first": first,
        "totals": [("Today", _totals(today_rows)), ("This month", month_total)],
        "near_percent": NEAR_PERCENT,
        "user_opts": get_user_model()._meta,
        "alerts": alerts,
        "page": page,
        "rows": rows,
        "columns": [kind.label for kind in METERS],
        "search": search,
        "top_spenders": top,
        "denied": denied,
        "site_chart": bar_chart(days, [r["total_tokens"] for r in site], "tokens"),
        "site_spend_chart": bar_chart(days, [r["cost"] for r in site], "spend", money=True),
        "unreachable": any(p.error for p in panels.values()),
    }
