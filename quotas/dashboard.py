"""Figures for the usage dashboard: every user's standing from the ledger in SQL, a user's
live limits through the service, history and breakdowns from the ledger."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from django.contrib.auth import get_user_model
from django.db.models import Sum
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from . import ledger, ledger_totals, services, standing
from .charts import Chart, bar_chart, usd
from .engine import CountersUnavailable, Decision
from .limit_kinds import BY_FIELD
from .models import APIKey, LevelUsage, QuotaAdjustment, Team, Tier, UsageRecord
from .money import from_micros
from .policy import quota_for_team, quota_for_user

NEAR_PERCENT = standing.NEAR_PERCENT
PER_PAGE = 50
TOP = 10
HISTORY_DAYS = 30
MAX_RANGE_DAYS = 366

# A user's live limits, in order.
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
BOOSTED = {"requests_per_day": "requests", "tokens_per_day": "tokens"}


@dataclass(frozen=True)
class Meter:
    """One limit (or an unlimited figure) as a bar: used against limit."""

    name: str
    label: str
    used: str
    limit: str | None  # None: unlimited
    percent: int | None
    level: str  # "ok", "near", "over" or "free" (no limit)
    boost: str = ""  # e.g. "+1,000 boost today"

    @property
    def width(self) -> int:
        return max(0, min(100, self.percent or 0))

    def html(self) -> SafeString:
        """The meter as `quotas/meter.html` shows it (built here: the users table has
        hundreds)."""
        if self.limit is not None:
            boost = format_html('<span class="quotas-boost">{}</span>', self.boost)
            inner = format_html(
                '<span class="quotas-figures"><span class="quotas-used">{}</span> / '
                '<span class="quotas-limit">{}</span></span>{}<span class="quotas-gauge">'
                '<span class="quotas-bar" role="progressbar" aria-label="{}" '
                'aria-valuenow="{}" aria-valuemin="0" aria-valuemax="100">'
                '<span style="width: {}%"></span></span>'
                '<span class="quotas-percent">{}%</span></span>',
                self.used,
                self.limit,
                boost if self.boost else "",
                self.label,
                self.width,
                self.width,
                self.percent,
            )
        elif self.used:
            inner = format_html(
                '<span class="quotas-figures"><span class="quotas-used">{}</span></span>'
                '<span class="quotas-nolimit">no limit</span>',
                self.used,
            )
        else:
            inner = mark_safe('<span class="quotas-nolimit">no limit</span>')  # a constant
        return format_html(
            '<div class="quotas-meter quotas-{}" data-limit="{}">{}</div>',
            self.level,
            self.name,
            inner,
        )


def _meter(
    name: str,
    label: str,
    is_money: bool,
    used: int | Decimal | None,
    limit: int | Decimal | None,
    boost: int = 0,
) -> Meter:
    """`used` and `limit` as the counters hold them; a boost shows as a raised limit."""

    def show(value: int | Decimal) -> str:
        if is_money:
            return usd(value if isinstance(value, Decimal) else from_micros(int(value)))
        return f"{int(value):,}"

    raised = f"+{boost:,} boost today" if boost else ""
    if limit is None:
        return Meter(name, label, "" if used is None else show(used), None, None, "free", raised)
    used, limit = max(0, (used or 0) + boost), limit + boost
    percent = 100 if limit <= 0 else int(used * 100 // limit)
    level = "over" if used >= limit else "near" if percent >= NEAR_PERCENT else "ok"
    return Meter(name, label, show(used), show(limit), percent, level, raised)


def meters(decision: Decision, boosts: dict[str, int] | None = None) -> list[Meter]:
    boosts = boosts or {}
    out = []
    for kind in METERS:
        state = next((s for s in decision.states if s.name == kind.field), None)
        boost = boosts.get(BOOSTED.get(kind.field, ""), 0)
        if state is not None:
            out.append(
                _meter(kind.field, kind.label, kind.is_money, state.used, state.limit, boost)
            )
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
    charts: list[Chart] = field(default_factory=list)

    @property
    def alerts(self) -> list[Meter]:
        return [m for m in self.meters if m.level in ("near", "over")]


UNREACHABLE = "The quota counters (Redis) are unreachable; live figures are missing."


def boosts_today(user_id: int) -> dict[str, int]:
    """The requests and tokens staff added to a user's day."""
    day, _, _ = ledger.today()
    given = QuotaAdjustment.objects.filter(
        user_id=user_id, day=day, kind=QuotaAdjustment.BOOST
    ).aggregate(requests=Sum("requests"), tokens=Sum("tokens"))
    return {name: value or 0 for name, value in given.items()}


def user_panel(user: Any, *, history: bool = False, live: bool = True) -> Panel:
    """`live=False` skips Redis (known to be down) and leaves the live figures out."""
    quota = quota_for_user(user)
    panel = Panel(user, quota.tier_name, quota.blocked)
    boosts = boosts_today(user.pk)
    try:
        if not live:
            raise CountersUnavailable()
        panel.meters = meters(services.service.usage(user.pk, quota), boosts)
    except CountersUnavailable:
        panel.error = UNREACHABLE
    if history:
        today, _, _ = ledger.today()
        days = _days(today - timedelta(days=HISTORY_DAYS - 1), today)
        limits = {
            "requests": None
            if quota.requests_per_day is None
            else quota.requests_per_day + boosts["requests"],
            "tokens": None
            if quota.tokens_per_day is None
            else quota.tokens_per_day + boosts["tokens"],
            "spend": quota.spend_per_day,
        }
        panel.charts = _charts(days, _by_day(days, user_id=user.pk), limits)
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


def _days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def _by_day(days: list[date], **filters: Any) -> list[dict[str, Any]]:
    """The ledger's sums for each day (zeros where none)."""
    rows = ledger.ledger_rows(date_from=days[0], date_to=days[-1], **filters)
    by_day = {row["day"]: row for row in rows}
    empty = {"requests": 0, "total_tokens": 0, "cost": Decimal(0), "denied": 0}
    return [by_day.get(day, empty) for day in days]


def _charts(
    days: list[date], rows: list[dict[str, Any]], limits: dict[str, Any] | None = None
) -> list[Chart]:
    limits = limits or {}
    return [
        bar_chart(days, [r["requests"] for r in rows], "requests", limit=limits.get("requests")),
        bar_chart(days, [r["total_tokens"] for r in rows], "tokens", limit=limits.get("tokens")),
        bar_chart(days, [r["cost"] for r in rows], "spend", money=True, limit=limits.get("spend")),
        bar_chart(days, [r["denied"] for r in rows], "denied requests"),
    ]


def _sparklines(user_ids: list[int], today: date) -> dict[int, Chart]:
    """Tokens per day over the last 30 days of the page's users only."""
    days = _days(today - timedelta(days=HISTORY_DAYS - 1), today)
    tokens: dict[int, dict[date, int]] = {uid: {} for uid in user_ids}
    rows = (
        UsageRecord.objects.filter(user_id__in=user_ids, day__gte=days[0], day__lte=today)
        .values("user_id", "day")
        .annotate(prompt=Sum("prompt_tokens"), completion=Sum("completion_tokens"))
    )
    for row in rows:
        tokens[row["user_id"]][row["day"]] = row["prompt"] + row["completion"]
    return {
        uid: bar_chart(days, [per_day.get(d, 0) for d in days], "tokens", small=True)
        for uid, per_day in tokens.items()
    }


def _shown(row: dict[str, Any]) -> dict[str, Any]:
    """Ledger sums (named as in SUMS) with their figures formatted for display."""
    requests, denied = row["calls"] or 0, row["refused"] or 0
    tokens = (row["prompt"] or 0) + (row.get("completion") or 0)
    cost = Decimal(row["spent"] or 0)
    return {
        **row,
        "requests": requests,
        "tokens": tokens,
        "cost": cost,
        "denied": denied,
        "requests_display": f"{requests:,}",
        "tokens_display": f"{tokens:,}",
        "cached_display": f"{row.get('cached') or 0:,}",
        "reasoning_display": f"{row.get('reasoning') or 0:,}",
        "cost_display": usd(cost),
        "denied_display": f"{denied:,}",
    }


# Sums of the ledger, named apart from its columns.
COLUMNS = {
    "calls": "requests",
    "prompt": "prompt_tokens",
    "completion": "completion_tokens",
    "cached": "cached_tokens",
    "reasoning": "reasoning_tokens",
    "spent": "cost",
    "refused": "denied",
}
SUMS = tuple(COLUMNS)


def _site(
    today: date, first: date, last: date, start: date, end: date
) -> tuple[list[Any], list[Chart], list[Any]]:
    """The totals of today, this month and the range, the site's charts and the range's
    figures by model: from the ledger's sums per day and model, one query."""
    since, until = min(first, start, today), max(last, end, today)
    per_day = ledger_totals.by_day_and_model(since, until)
    sums = {name: Sum(COLUMNS[name]) for name in SUMS}
    by_day: dict[date, dict[str, Any]] = {}
    by_model: dict[str, dict[str, Any]] = {}
    for row in per_day.values("day", "model").annotate(**sums).order_by():
        sums_of_day = by_day.setdefault(row["day"], dict.fromkeys(SUMS, 0))
        for name in SUMS:
            sums_of_day[name] += row[name] or 0
        if start <= row["day"] <= end:
            model = by_model.setdefault(
                row["model"], {"model": row["model"], **dict.fromkeys(SUMS, 0)}
            )
            for name in SUMS:
                model[name] += row[name] or 0

    def total(first_day: date, last_day: date) -> dict[str, Any]:
        rows = [row for day, row in by_day.items() if first_day <= day <= last_day]
        return _shown({name: sum(r[name] or 0 for r in rows) for name in SUMS})

    totals = [
        ("Today", "today", total(today, today)),
        ("This month", "month", total(first, last)),
        ("Range", "range", total(start, end)),
    ]
    days = _days(start, end)
    empty = {"requests": 0, "total_tokens": 0, "cost": Decimal(0), "denied": 0}
    rows = []
    for day in days:
        row = by_day.get(day)
        if row is None:
            rows.append(empty)
            continue
        shown = _shown(row)
        rows.append({**shown, "total_tokens": shown["tokens"]})
    models = sorted((_shown(m) for m in by_model.values()), key=lambda m: (-m["cost"], m["model"]))
    return totals, _charts(days, rows), models


def _rank(name: str) -> Any:
    return lambda row: row[f"by_{name}"]


def _breakdowns(
    today: date, start: date, end: date, total_cost: Decimal, models: list[Any]
) -> dict[str, Any]:
    leaders = [_shown(row) for row in standing.leaders(start, end, today, TOP)]
    top = sorted((r for r in leaders if r["by_spend"] <= TOP and r["cost"]), key=_rank("spend"))
    for row in top:
        row["share"] = f"{row['cost'] * 100 / total_cost:.1f}%" if total_cost else "-"
    denied = sorted(
        (r for r in leaders if r["by_denied"] <= TOP and r["denied"]), key=_rank("denied")
    )
    by_level: Any = LevelUsage.objects.filter(level__startswith="k:", day__gte=start, day__lte=end)
    key_rows = (
        by_level.values("level")
        .annotate(**{n: Sum(COLUMNS[n]) for n in SUMS if n not in ("cached", "reasoning")})
        .order_by("-spent", "level")[:TOP]
    )
    keys = [_shown(row) for row in key_rows]
    names = {
        f"k:{k['pk']}": k
        for k in APIKey.objects.filter(pk__in=[r["level"][2:] for r in keys]).values(
            "pk", "name", "prefix", "user_id", "user__username"
        )
    }
    for row in keys:
        row["key"] = names.get(row["level"])
    return {"top_spenders": top, "denied": denied, "by_model": models, "by_key": keys}


def date_range(start: str, end: str) -> tuple[date, date, str]:
    """The days asked for (default: the last 30), and an error to show if they were bad."""
    today, _, _ = ledger.today()
    default = (today - timedelta(days=HISTORY_DAYS - 1), today)
    if not start and not end:
        return *default, ""
    try:
        first = date.fromisoformat(start) if start else default[0]
        last = date.fromisoformat(end) if end else today
    except ValueError:
        return *default, "Dates are YYYY-MM-DD; showing the last 30 days."
    if first > last:
        return *default, "The range starts after it ends; showing the last 30 days."
    if (last - first).days >= MAX_RANGE_DAYS:
        return *default, f"A range covers at most {MAX_RANGE_DAYS} days; showing the last 30."
    return first, last, ""


def _meters_of(row: dict[str, Any]) -> list[Meter]:
    out = []
    for name in standing.LIMIT_NAMES:
        kind = BY_FIELD[name]
        limit = row[f"{name}_limit"]
        boost = row.get(f"boost_{BOOSTED[name]}", 0) if name in BOOSTED else 0
        used = row[f"{name}_used"]
        if limit is not None:  # the limit is raised already: show the boost beside it
            limit -= boost
            used -= boost
        out.append(_meter(name, kind.label, kind.is_money, used, limit, boost))
    return out


def dashboard(params: Any) -> dict[str, Any]:
    """Everything the dashboard shows, for one page of users; `params`: the query string."""
    today, first, last = ledger.today()
    start, end, range_error = date_range(params.get("from", ""), params.get("to", ""))
    tiers = list(Tier.objects.order_by("name").values("id", "name", "is_default"))
    teams = list(Team.objects.order_by("name").values("id", "name")[:500])
    default_tier = next((t["id"] for t in tiers if t["is_default"]), None)
    filters = {
        "search": params.get("q", "").strip()[:150],
        "tier": _known(params.get("tier", ""), {t["id"] for t in tiers}),
        "team": _known(params.get("team", ""), {t["id"] for t in teams}),
        "state": params.get("state", "") if params.get("state") in standing.STATES else "",
        "limit": params.get("limit", "") if params.get("limit") in standing.LIMIT_NAMES else "",
    }
    sort = params.get("sort", standing.DEFAULT_SORT)
    if sort.lstrip("-") not in standing.SORTS:
        sort = standing.DEFAULT_SORT
    try:
        number = max(1, int(params.get("page", 1)))
    except (TypeError, ValueError):
        number = 1
    found = standing.standing(
        today,
        first,
        last,
        default_tier=default_tier,
        filters=filters,
        sort=sort,
        limit=PER_PAGE,
        offset=(number - 1) * PER_PAGE,
    )
    sparklines = _sparklines([r["user_id"] for r in found.rows], today)
    rows = [(row, _meters_of(row), sparklines[row["user_id"]]) for row in found.rows]
    totals, site_charts, models = _site(today, first, last, start, end)
    pages = max(1, -(-found.matched // PER_PAGE))
    counts = [
        {
            "name": name,
            "label": label,
            "over": found.over[name],
            "near": found.near[name],
            "over_url": link(params, **ALL_USERS, state="over", limit=_limit(name)),
            "near_url": link(params, **ALL_USERS, state="near", limit=_limit(name)),
        }
        for name, label in (
            ("any", "Any limit"),
            *((n, BY_FIELD[n].label) for n in standing.LIMIT_NAMES),
        )
    ]
    return {
        "today": today,
        "month_first": first,
        "start": start,
        "end": end,
        "range_error": range_error,
        "totals": totals,
        "near_percent": NEAR_PERCENT,
        "user_opts": get_user_model()._meta,
        "standing": found,
        "limits": [(name, BY_FIELD[name].label) for name in standing.LIMIT_NAMES],
        "rows": rows,
        "filters": filters,
        "sort": sort,
        "tiers": tiers,
        "teams": teams,
        "page_number": number,
        "pages": pages,
        "previous_url": link(params, page=number - 1) if number > 1 else "",
        "next_url": link(params, page=number + 1) if number < pages else "",
        "counts": counts,
        "blocked_url": link(params, **ALL_USERS, state="blocked", limit=None),
        "clear_url": link(params, state=None, limit=None, tier=None, team=None, q=None),
        "headers": headers(params, sort),
        "site_charts": site_charts,
        **_breakdowns(today, start, end, totals[2][2]["cost"], models),
    }


def link(params: Any, **changes: Any) -> str:
    """The dashboard's query string with `changes` (None drops a parameter); page 1."""
    query = params.copy()
    for name, value in {**changes, "page": changes.get("page")}.items():
        query.pop(name, None)
        if value not in (None, ""):
            query[name] = str(value)
    return f"?{query.urlencode()}"


def headers(params: Any, sort: str) -> list[dict[str, str]]:
    """The users table's column headers, each a link sorting by it (again: reversed)."""
    columns = [("user", "User"), ("tier", "Tier"), ("team", "Team")]
    columns += [(name, BY_FIELD[name].label) for name in standing.LIMIT_NAMES]
    columns += [("worst", "Highest %"), ("denied", "Denied this month")]
    out = []
    for key, label in columns:
        current = sort.lstrip("-") == key
        descending = sort.startswith("-")
        first = key if key in ("user", "tier", "team") else f"-{key}"
        target = (key if descending else f"-{key}") if current else first
        arrow = (" ↓" if descending else " ↑") if current else ""
        out.append({"key": key, "label": label, "url": link(params, sort=target), "arrow": arrow})
    return out


# The counts are over every user: their links drop the table's other filters.
ALL_USERS: dict[str, Any] = {"q": None, "tier": None, "team": None}


def _limit(name: str) -> str | None:
    return None if name == "any" else name


def _known(value: str, ids: set[int]) -> int | None:
    return int(value) if value.isdigit() and int(value) in ids else None
