"""Reading the ledger's sums from the totals the database keeps beside it.

`LedgerDayTotal` holds every user's ledger per day and model; `LedgerMonthTotal` a user's
ledger per month. Triggers keep both equal to the ledger (see `models.LedgerTotal`), so a
sum over days reads a handful of totals instead of every ledger row. A range of days is
read per month, whichever is fewer rows: the month's totals less the ledger rows of its
days outside the range, or the ledger rows of its days inside it. Days after today count
as holding no rows. Either way the sums are the ledger's, exactly.

On databases without the triggers every sum is read from the ledger itself: other than
PostgreSQL and SQLite, and any database built without migration 0008 (e.g. by
`pytest --nomigrations`) or whose triggers were disabled.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from django.db import connection

from .models import LedgerDayTotal, LedgerMonthTotal, UsageRecord

# The databases whose migration installs the triggers: how many of them it installs, and
# a query counting those that are there (and enabled).
TRIGGERS = {
    "postgresql": (
        2,
        "SELECT COUNT(*) FROM pg_trigger WHERE tgrelid = 'quotas_usagerecord'::regclass "
        "AND tgname IN ('quotas_ledger_totals', 'quotas_ledger_totals_emptied') "
        "AND tgenabled <> 'D'",
    ),
    "sqlite": (
        4,
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'trigger' AND tbl_name = "
        "'quotas_usagerecord' AND name IN ('quotas_ledger_totals_insert', "
        "'quotas_ledger_totals_delete', 'quotas_ledger_totals_update', "
        "'quotas_ledger_totals_rekey')",
    ),
}
KEEPING_VENDORS = frozenset(TRIGGERS)


def kept() -> bool:
    """Whether this database keeps the totals: its ledger's triggers are all there and
    enabled. Looked up once per database connection."""
    if connection.vendor not in TRIGGERS:
        return False
    connection.ensure_connection()
    opened = id(connection.connection)
    known: tuple[int, bool] | None = getattr(connection, "quotas_totals_kept", None)
    if known is None or known[0] != opened:
        expected, sql = TRIGGERS[connection.vendor]
        with connection.cursor() as cursor:
            cursor.execute(sql)
            (found,) = cursor.fetchone()
        known = (opened, found == expected)
        connection.quotas_totals_kept = known  # type: ignore[attr-defined]
    return known[1]


def forget() -> None:
    """Look the triggers up again (after installing or disabling them)."""
    if hasattr(connection, "quotas_totals_kept"):
        del connection.quotas_totals_kept


def by_day_and_model(first: date, last: date) -> Any:
    """The rows to sum per day and model over [first, last]: the day totals, or the ledger.

    Both have the ledger's amount columns (`requests`, `prompt_tokens`, ..., `cost`,
    `denied`) and `day` and `model`.
    """
    rows: Any = LedgerDayTotal.objects if kept() else UsageRecord.objects
    return rows.filter(day__gte=first, day__lte=last)


@dataclass(frozen=True)
class Cover:
    """How the sums per user over a range of days are read.

    months: the first days of months whose totals are added;
    added: ranges of days (first, last) whose ledger rows are added;
    taken: ranges of days (in those months, outside the range) whose rows are taken off.
    """

    months: tuple[date, ...] = ()
    added: tuple[tuple[date, date], ...] = ()
    taken: tuple[tuple[date, date], ...] = ()


def _days_with_rows(first: date, last: date, today: date) -> int:
    """Days of [first, last] that may hold ledger rows: today's and before."""
    return max(0, (min(last, today) - first).days + 1)


def cover(first: date, last: date, today: date) -> Cover:
    """The fewest rows that sum to the ledger of [first, last] per user."""
    if not kept():
        return Cover(added=((first, last),))
    months: list[date] = []
    added: list[tuple[date, date]] = []
    taken: list[tuple[date, date]] = []
    month_first = first.replace(day=1)
    while month_first <= last:
        month_last = (month_first + timedelta(days=31)).replace(day=1) - timedelta(days=1)
        inside = (max(first, month_first), min(last, month_last))
        outside = [
            (a, b)
            for a, b in (
                (month_first, first - timedelta(days=1)),
                (last + timedelta(days=1), month_last),
            )
            if a <= b
        ]
        cost_inside = _days_with_rows(*inside, today)
        cost_outside = sum(_days_with_rows(a, b, today) for a, b in outside)
        if cost_outside < cost_inside:
            months.append(month_first)
            taken += outside
        else:
            added.append(inside)
        month_first = month_last + timedelta(days=1)
    return Cover(tuple(months), _joined(added), _joined(taken))


def _joined(ranges: list[tuple[date, date]]) -> tuple[tuple[date, date], ...]:
    """Adjacent ranges as one."""
    out: list[tuple[date, date]] = []
    for a, b in sorted(ranges):
        if out and out[-1][1] + timedelta(days=1) >= a:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return tuple(out)


def per_user_rows(found: Cover, columns: dict[str, str], prefix: str) -> tuple[str, dict[str, Any]]:
    """A SELECT of `user_id`, `records` and each of `columns` (name: an expression over the
    ledger's amount columns) from the rows of `found`, those taken off negated: summed by
    `user_id`, they are the ledger's sums over the range, and `records` its rows (a user
    with none there sums to 0). Its parameters are named `prefix` and a number."""
    quote = connection.ops.quote_name
    ledger = quote(UsageRecord._meta.db_table)
    months = quote(LedgerMonthTotal._meta.db_table)
    params: dict[str, Any] = {}

    def name(value: Any) -> str:
        key = f"{prefix}{len(params)}"
        params[key] = value
        return f"%({key})s"

    def select(table: str, records: str, where: str, sign: str) -> str:
        shown = ", ".join(f"{sign}({expr}) AS {column}" for column, expr in columns.items())
        return f"SELECT user_id, {sign}{records} AS records, {shown} FROM {table} WHERE {where}"

    parts = []
    if found.months:
        listed = ", ".join(name(month) for month in found.months)
        parts.append(select(months, "records", f"month IN ({listed})", ""))
    for ranges, sign in ((found.added, ""), (found.taken, "-")):
        if ranges:
            where = " OR ".join(f"(day >= {name(a)} AND day <= {name(b)})" for a, b in ranges)
            parts.append(select(ledger, "1", where, sign))
    if not parts:  # an empty range
        parts.append(select(ledger, "1", "1 = 0", ""))
    return "\nUNION ALL\n".join(parts), params
