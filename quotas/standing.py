"""Every user's settled usage against their day and month limits, in one SQL statement.

Limits are the user's overrides over their tier (else the default tier); today's boosts
raise the day limits and today's resets take back the day's usage, as the counters do.
The statement returns one page of users, in any order, with counts over all users.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

from django.contrib.auth import get_user_model
from django.db import connection

from . import ledger_totals
from .models import QuotaAdjustment, Team, Tier, UsageRecord, UserQuota

NEAR_PERCENT = 80

# The limits the ledger can check: (field, usage column, boosted by, reset by).
LIMITS = (
    ("requests_per_day", "requests_day", "boost_requests", "reset_requests"),
    ("tokens_per_day", "tokens_day", "boost_tokens", "reset_tokens"),
    ("spend_per_day", "spend_day", None, None),
    ("tokens_per_month", "tokens_month", None, None),
    ("spend_per_month", "spend_month", None, None),
)
LIMIT_NAMES = tuple(name for name, *_ in LIMITS)
MONEY = ("spend_per_day", "spend_per_month")
STATES = ("over", "near", "blocked")

# Sort keys of the users table: a limit's field sorts by its percent of the limit.
SORTS = {
    "user": "username",
    "tier": "tier",
    "team": "team",
    "worst": "worst",
    "denied": "denied_month",
    **{f"{name}_used": f"{name}_used" for name in LIMIT_NAMES},
    **{name: f"{name}_pct" for name in LIMIT_NAMES},
}
DEFAULT_SORT = "-worst"


@dataclass
class Standing:
    """One page of users and the counts over all of them."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    matched: int = 0  # users the filters select
    users: int = 0  # all users
    over: dict[str, int] = field(default_factory=dict)  # by limit, and "any"
    near: dict[str, int] = field(default_factory=dict)
    blocked: int = 0


def _tables() -> dict[str, str]:
    User = get_user_model()
    quote = connection.ops.quote_name
    username: Any = User._meta.get_field(User.USERNAME_FIELD)
    pk: Any = User._meta.pk
    return {
        "user": quote(User._meta.db_table),
        "user_pk": quote(pk.column),
        "username": quote(username.column),
        "quota": quote(UserQuota._meta.db_table),
        "tier": quote(Tier._meta.db_table),
        "team": quote(Team._meta.db_table),
        "ledger": quote(UsageRecord._meta.db_table),
        "adjustment": quote(QuotaAdjustment._meta.db_table),
    }


def _greatest() -> str:
    return "MAX" if connection.vendor == "sqlite" else "GREATEST"


# A month's sums per user, beside today's (which are read from the ledger apart).
MONTH_COLUMNS = {
    "requests_day": "0",
    "tokens_day": "0",
    "spend_day": "0",
    "tokens_month": "prompt_tokens + completion_tokens",
    "spend_month": "cost",
    "denied_month": "denied",
}


def _sql(where: str, order: str, month: str) -> str:
    t = _tables()
    big = _greatest()
    limits, percents = [], []
    for name, used, boost, reset in LIMITS:
        spent = f"COALESCE(used.{used}, 0)"
        if reset:
            spent = f"{big}(0, {spent} - COALESCE(given.{reset}, 0))"
        limit = f"COALESCE(q.{name}, t.{name})"
        if boost:
            limit = f"{limit} + COALESCE(given.{boost}, 0)"
        limits.append(f"{spent} AS {name}_used, {limit} AS {name}_limit")
        percents.append(
            f"CASE WHEN {name}_limit IS NULL THEN NULL WHEN {name}_limit <= 0 THEN 100.0 "
            f"ELSE {name}_used * 100.0 / {name}_limit END AS {name}_pct"
        )
    worst = f"{big}({', '.join(f'COALESCE({n}_pct, -1)' for n in LIMIT_NAMES)})"
    counts = []
    for name in (*LIMIT_NAMES, "worst"):
        pct = "worst" if name == "worst" else f"{name}_pct"
        counts.append(f"SUM(CASE WHEN {pct} >= 100 THEN 1 ELSE 0 END) AS over_{name}")
        counts.append(
            f"SUM(CASE WHEN {pct} >= {NEAR_PERCENT} AND {pct} < 100 THEN 1 ELSE 0 END) "
            f"AS near_{name}"
        )
    return f"""
WITH used AS (
  SELECT user_id, SUM(requests_day) AS requests_day, SUM(tokens_day) AS tokens_day,
    SUM(spend_day) AS spend_day, SUM(tokens_month) AS tokens_month,
    SUM(spend_month) AS spend_month, SUM(denied_month) AS denied_month
  FROM (
    SELECT user_id, 1 AS records, requests AS requests_day,
      prompt_tokens + completion_tokens AS tokens_day, cost AS spend_day, 0 AS tokens_month,
      0 AS spend_month, 0 AS denied_month
    FROM {t["ledger"]} WHERE day = %(today)s
    UNION ALL
    {month}
  ) parts GROUP BY user_id
), given AS (
  SELECT user_id,
    SUM(CASE WHEN kind = 'boost' THEN requests ELSE 0 END) AS boost_requests,
    SUM(CASE WHEN kind = 'boost' THEN tokens ELSE 0 END) AS boost_tokens,
    SUM(CASE WHEN kind = 'reset' THEN requests ELSE 0 END) AS reset_requests,
    SUM(CASE WHEN kind = 'reset' THEN tokens ELSE 0 END) AS reset_tokens
  FROM {t["adjustment"]} WHERE day = %(today)s GROUP BY user_id
), standing AS (
  SELECT u.{t["user_pk"]} AS user_id, u.{t["username"]} AS username,
    t.id AS tier_id, COALESCE(t.name, 'No tier') AS tier, m.id AS team_id, m.name AS team,
    CASE WHEN COALESCE(q.blocked, FALSE) OR COALESCE(m.blocked, FALSE) THEN 1 ELSE 0 END
      AS blocked,
    COALESCE(given.boost_requests, 0) AS boost_requests,
    COALESCE(given.boost_tokens, 0) AS boost_tokens,
    COALESCE(used.denied_month, 0) AS denied_month,
    {", ".join(limits)}
  FROM {t["user"]} u
  LEFT JOIN {t["quota"]} q ON q.user_id = u.{t["user_pk"]}
  LEFT JOIN {t["tier"]} t ON t.id = COALESCE(q.tier_id, %(default_tier)s)
  LEFT JOIN {t["team"]} m ON m.id = q.team_id
  LEFT JOIN used ON used.user_id = u.{t["user_pk"]}
  LEFT JOIN given ON given.user_id = u.{t["user_pk"]}
), scored AS (
  SELECT standing.*, {", ".join(percents)} FROM standing
), rated AS (
  SELECT scored.*, {worst} AS worst FROM scored
), counts AS (
  SELECT COUNT(*) AS users, SUM(blocked) AS blocked_users, {", ".join(counts)} FROM rated
)
SELECT counts.*, page.* FROM counts LEFT JOIN (
  SELECT rated.*, COUNT(*) OVER () AS matched FROM rated WHERE {where}
  ORDER BY {order} LIMIT %(limit)s OFFSET %(offset)s
) page ON 1 = 1
"""


def _where(filters: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    clauses, params = ["1 = 1"], {}
    if filters.get("search"):
        text = filters["search"].lower()
        for char in "\\%_":
            text = text.replace(char, "\\" + char)
        clauses.append("LOWER(username) LIKE %(search)s ESCAPE '\\'")
        params["search"] = f"%{text}%"
    if filters.get("tier"):
        clauses.append("tier_id = %(tier)s")
        params["tier"] = filters["tier"]
    if filters.get("team"):
        clauses.append("team_id = %(team)s")
        params["team"] = filters["team"]
    state, limit = filters.get("state"), filters.get("limit")
    pct = f"{limit}_pct" if limit in LIMIT_NAMES else "worst"
    if state == "over":
        clauses.append(f"{pct} >= 100")
    elif state == "near":
        clauses.append(f"{pct} >= {NEAR_PERCENT} AND {pct} < 100")
    elif state == "blocked":
        clauses.append("blocked = 1")
    return " AND ".join(clauses), params


def _order(sort: str) -> str:
    descending = sort.startswith("-")
    column = SORTS.get(sort.lstrip("-"), "worst")
    direction = "DESC" if descending else "ASC"
    return f"{column} {direction} NULLS LAST, username ASC, user_id ASC"


def _money(value: Any) -> Decimal:
    return Decimal(str(value or 0)).quantize(Decimal("0.000001"))


def standing(
    today: date,
    first: date,
    last: date,
    *,
    default_tier: int | None,
    filters: dict[str, Any],
    sort: str = DEFAULT_SORT,
    limit: int = 50,
    offset: int = 0,
) -> Standing:
    """The page of users (`limit` from `offset`) selected by `filters` and in `sort`
    order, and counts over every user; one query."""
    where, params = _where(filters)
    month, month_params = ledger_totals.per_user_rows(
        ledger_totals.cover(first, last, today), MONTH_COLUMNS, "month"
    )
    params.update(month_params)
    params.update(
        today=today,
        first=first,
        last=last,
        default_tier=default_tier,
        limit=limit,
        offset=offset,
    )
    with connection.cursor() as cursor:
        cursor.execute(_sql(where, _order(sort), month), params)
        names = [column[0] for column in cursor.description]
        rows = [dict(zip(names, values, strict=True)) for values in cursor.fetchall()]
    head = rows[0]
    out = Standing(
        users=head["users"] or 0,
        blocked=head["blocked_users"] or 0,
        over={n: head[f"over_{n}"] or 0 for n in LIMIT_NAMES} | {"any": head["over_worst"] or 0},
        near={n: head[f"near_{n}"] or 0 for n in LIMIT_NAMES} | {"any": head["near_worst"] or 0},
    )
    for row in rows:
        if row["user_id"] is None:  # no user matched: only the counts came back
            continue
        out.matched = row["matched"]
        for name in MONEY:
            row[f"{name}_used"] = _money(row[f"{name}_used"])
            if row[f"{name}_limit"] is not None:
                row[f"{name}_limit"] = _money(row[f"{name}_limit"])
        row["blocked"] = bool(row["blocked"])
        row["worst_percent"] = int(row["worst"]) if row["worst"] >= 0 else None
        out.rows.append(row)
    return out


# The sums of the top users over a range.
LEADER_COLUMNS = {
    "calls": "requests",
    "prompt": "prompt_tokens",
    "completion": "completion_tokens",
    "spent": "cost",
    "refused": "denied",
}


def leaders(first: date, last: date, today: date, top: int) -> list[dict[str, Any]]:
    """The `top` users by spend and the `top` by denied requests in [first, last] (with
    their requests denied today), in one query over the ledger's totals: each row says
    its ranks (`by_spend`, `by_denied`)."""
    t = _tables()
    parts, params = ledger_totals.per_user_rows(
        ledger_totals.cover(first, last, today), LEADER_COLUMNS, "range"
    )
    sql = f"""
WITH per_user AS (
  SELECT user_id, SUM(calls) AS calls, SUM(prompt) AS prompt,
    SUM(completion) AS completion, SUM(spent) AS spent, SUM(refused) AS refused
  FROM (
    {parts}
  ) parts GROUP BY user_id HAVING SUM(records) > 0
), ranked AS (
  SELECT per_user.*,
    ROW_NUMBER() OVER (ORDER BY spent DESC, user_id) AS by_spend,
    ROW_NUMBER() OVER (ORDER BY refused DESC, user_id) AS by_denied
  FROM per_user
), leaders AS (
  SELECT * FROM ranked
  WHERE (by_spend <= %(top)s AND spent > 0) OR (by_denied <= %(top)s AND refused > 0)
)
SELECT leaders.*, u.{t["username"]} AS user__username,
  (SELECT COALESCE(SUM(denied), 0) FROM {t["ledger"]} on_day
    WHERE on_day.user_id = leaders.user_id AND on_day.day = %(denied_day)s) AS today
FROM leaders JOIN {t["user"]} u ON u.{t["user_pk"]} = leaders.user_id
"""
    params.update(top=top, denied_day=today if first <= today <= last else None)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        names = [column[0] for column in cursor.description]
        rows = [dict(zip(names, values, strict=True)) for values in cursor.fetchall()]
    for row in rows:
        row["spent"] = _money(row["spent"])
    return rows
