from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connection
from django.db.models import Count, Sum
from django.db.models.functions import TruncMonth

from quotas import ledger_totals
from quotas.adjustments import grant_boost, reset_today
from quotas.ledger import today
from quotas.ledger_totals import Cover, cover
from quotas.models import (
    LEDGER_AMOUNTS,
    LedgerDayTotal,
    LedgerMonthTotal,
    Tier,
    UsageRecord,
    UserQuota,
)
from quotas.policy import quota_for_user
from quotas.services import service

pytestmark = pytest.mark.django_db

SUMS = {"records": Count("id"), **{name: Sum(name) for name in LEDGER_AMOUNTS}}


def make_user(name: str):
    tier = Tier.objects.create(slug=f"tier-{name}", name=name, tokens_per_day=100_000)
    user = get_user_model().objects.create_user(name)
    UserQuota.objects.create(user=user, tier=tier)
    return user


def settle(user, prompt: int, completion: int, cost: int, model: str = "gpt-4o-mini"):
    _, grant = service.reserve(
        user.pk, quota_for_user(user), model=model, tokens=prompt + completion, spend=cost
    )
    assert grant is not None
    service.settle(grant, prompt_tokens=prompt, completion_tokens=completion, cost=cost)


def by_day() -> dict[tuple[date, str], dict]:
    """The ledger summed per day and model, and the day totals, in the same shape."""
    rows = UsageRecord.objects.values("day", "model").annotate(**SUMS).order_by()
    return {(r.pop("day"), r.pop("model")): r for r in rows}


def by_month() -> dict[tuple[int, date], dict]:
    rows = (
        UsageRecord.objects.annotate(month=TruncMonth("day"))
        .values("user_id", "month")
        .annotate(**SUMS)
        .order_by()
    )
    return {(r.pop("user_id"), r.pop("month")): r for r in rows}


def day_totals() -> dict[tuple[date, str], dict]:
    return {
        (t.day, t.model): {"records": t.records, **{n: getattr(t, n) for n in LEDGER_AMOUNTS}}
        for t in LedgerDayTotal.objects.all()
    }


def month_totals() -> dict[tuple[int, date], dict]:
    return {
        (t.user_id, t.month): {"records": t.records, **{n: getattr(t, n) for n in LEDGER_AMOUNTS}}
        for t in LedgerMonthTotal.objects.all()
    }


def assert_totals_equal_the_ledger() -> None:
    assert day_totals() == by_day()
    assert month_totals() == by_month()


@pytest.fixture(autouse=True)
def _kept():
    if not ledger_totals.kept():
        pytest.skip(f"no ledger totals on {connection.vendor}")


def test_the_totals_equal_the_ledger_after_writes_adjustments_and_reconcile():
    ada, bob = make_user("ada"), make_user("bob")
    day = today()[0]
    last_month = day.replace(day=1) - timedelta(days=3)

    settle(ada, 300, 200, 250_000)
    settle(ada, 10, 5, 7, model="gpt-4o")
    settle(bob, 40, 40, 30_000)
    _, refused = service.reserve(
        bob.pk, quota_for_user(bob), model="gpt-4o-mini", tokens=10**9, spend=0
    )
    assert refused is None  # a denial is a ledger write too
    UsageRecord.add(ada.pk, last_month, "gpt-4o", requests=2, prompt_tokens=900, cost="0.5")
    UsageRecord.objects.bulk_create(
        UsageRecord(user=bob, day=day - timedelta(days=n), model="o3-mini", requests=n)
        for n in range(1, 40)
    )
    assert_totals_equal_the_ledger()
    assert LedgerDayTotal.objects.get(day=day, model="gpt-4o-mini").prompt_tokens == 340

    grant_boost(ada.pk, tokens=1_000)
    reset_today(bob.pk)
    out = StringIO()
    call_command("quota_reconcile", "--no-progress", "--fix", stdout=out)
    assert out.getvalue()
    assert_totals_equal_the_ledger()

    # rows changed in place, moved to another day and month, and deleted
    UsageRecord.objects.filter(user=ada, model="gpt-4o").update(cost=Decimal("0.25"))
    moved = UsageRecord.objects.filter(user=bob, model="o3-mini")
    moved.filter(requests=2).update(day=day - timedelta(days=60))
    moved.filter(requests=3).update(model="gpt-4o", prompt_tokens=7)
    UsageRecord.objects.filter(user=bob, requests=30).delete()
    assert_totals_equal_the_ledger()


def test_a_deleted_users_rows_leave_the_totals():
    ada, bob = make_user("ada"), make_user("bob")
    settle(ada, 100, 0, 1_000)
    settle(bob, 50, 0, 2_000)
    ada.delete()
    assert_totals_equal_the_ledger()
    (only,) = LedgerDayTotal.objects.all()
    assert (only.records, only.prompt_tokens, only.cost) == (1, 50, Decimal("0.002"))
    assert not LedgerMonthTotal.objects.filter(user_id=ada.pk).exists()


def test_an_emptied_ledger_empties_its_totals():
    settle(make_user("ada"), 100, 0, 1_000)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":  # (the test's foreign keys checked first)
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
            cursor.execute("TRUNCATE quotas_usagerecord")
        else:  # SQLite has no TRUNCATE: a DELETE without WHERE is its own
            cursor.execute("DELETE FROM quotas_usagerecord")
    assert not LedgerDayTotal.objects.exists() and not LedgerMonthTotal.objects.exists()


@pytest.fixture
def without_triggers():
    """The ledger's triggers gone for the test (its transaction puts them back)."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("ALTER TABLE quotas_usagerecord DISABLE TRIGGER quotas_ledger_totals")
        else:
            cursor.execute("DROP TRIGGER quotas_ledger_totals_insert")
    ledger_totals.forget()
    yield
    ledger_totals.forget()


def test_a_ledger_without_its_triggers_is_summed_itself(without_triggers):
    from django.http import QueryDict

    from quotas.dashboard import dashboard

    assert not ledger_totals.kept()
    settle(make_user("ada"), 100, 20, 5_000)
    assert not LedgerDayTotal.objects.exists()  # nothing kept them
    shown = dashboard(QueryDict())
    assert shown["totals"][0][2]["tokens"] == 120
    assert [(r["user__username"], r["tokens"]) for r in shown["top_spenders"]] == [("ada", 120)]
    assert shown["rows"][0][0]["tokens_per_month_used"] == 120


def test_the_triggers_are_looked_up_once_per_connection(django_assert_num_queries):
    ledger_totals.forget()
    with django_assert_num_queries(1):
        assert ledger_totals.kept() and ledger_totals.kept()


DEC = date(2026, 12, 1)


class TestCover:
    def test_a_whole_month_is_its_totals(self):
        assert cover(date(2026, 11, 1), date(2026, 11, 30), date(2026, 12, 3)) == Cover(
            months=(date(2026, 11, 1),)
        )

    def test_most_of_a_month_is_its_totals_less_the_days_outside(self):
        # the last 30 days on Dec 3: November less its first 3 days; December so far
        # (the days after today hold no rows)
        found = cover(date(2026, 11, 4), date(2026, 12, 3), date(2026, 12, 3))
        assert found == Cover(
            months=(date(2026, 11, 1), DEC),
            taken=((date(2026, 11, 1), date(2026, 11, 3)), (date(2026, 12, 4), date(2026, 12, 31))),
        )

    def test_a_few_days_of_a_month_are_read_from_the_ledger(self):
        found = cover(date(2026, 10, 28), date(2026, 11, 2), date(2026, 12, 3))
        assert found == Cover(added=((date(2026, 10, 28), date(2026, 11, 2)),))

    def test_a_month_still_to_come_is_read_from_the_ledger(self):
        found = cover(date(2027, 1, 1), date(2027, 1, 31), date(2026, 12, 3))
        assert found == Cover(added=((date(2027, 1, 1), date(2027, 1, 31)),))

    def test_without_the_totals_the_range_is_the_ledger(self, monkeypatch):
        monkeypatch.setattr(ledger_totals, "kept", lambda: False)
        first, last = date(2026, 9, 5), date(2026, 12, 3)
        assert cover(first, last, last) == Cover(added=((first, last),))


@pytest.mark.parametrize(
    ("first", "last"),
    [(-29, 0), (-89, 0), (-3, -1), (-45, -40), (-400, 5)],
)
def test_sums_per_user_over_a_range_equal_the_ledger(first, last):
    ada, bob = make_user("ada"), make_user("bob")
    day = today()[0]
    UsageRecord.objects.bulk_create(
        UsageRecord(
            user=user,
            day=day - timedelta(days=back),
            model="m",
            requests=1 + back % 5,
            cost=Decimal(back) / 1000,
            denied=back % 3,
        )
        for user, step in ((ada, 1), (bob, 7))
        for back in range(0, 120, step)
    )
    start, end = day + timedelta(days=first), day + timedelta(days=last)
    columns = {"calls": "requests", "spent": "cost", "refused": "denied"}
    parts, params = ledger_totals.per_user_rows(cover(start, end, day), columns, "p")
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT user_id, SUM(calls), SUM(spent), SUM(refused) FROM ({parts}) parts "
            "GROUP BY user_id HAVING SUM(records) > 0",
            params,
        )
        found = {
            user: (calls, Decimal(str(spent)).quantize(Decimal("0.000001")), refused)
            for user, calls, spent, refused in cursor.fetchall()
        }
    expected = {
        row["user_id"]: (row["calls"], row["spent"], row["refused"])
        for row in UsageRecord.objects.filter(day__gte=start, day__lte=end)
        .values("user_id")
        .annotate(calls=Sum("requests"), spent=Sum("cost"), refused=Sum("denied"))
    }
    assert found == expected  # a user with rows only outside the range is not there


@pytest.mark.django_db(transaction=True)
def test_the_migration_adds_up_the_ledger_already_there():
    from django.db.migrations.executor import MigrationExecutor

    before, after = [("quotas", "0007_alerts")], [("quotas", "0008_ledger_totals")]
    executor = MigrationExecutor(connection)
    executor.migrate(before)
    try:
        old = executor.loader.project_state(before).apps
        user = old.get_model("auth", "User").objects.create(username="ada")
        record = old.get_model("quotas", "UsageRecord").objects
        day = today()[0]
        for back, model in ((0, "a"), (0, "b"), (1, "a"), (40, "a")):
            record.create(
                user_id=user.pk, day=day - timedelta(days=back), model=model, requests=back + 1
            )
        executor = MigrationExecutor(connection)
        executor.migrate(after)
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())
    assert len(day_totals()) == 4 and sum(t["records"] for t in month_totals().values()) == 4
    assert_totals_equal_the_ledger()
    UsageRecord.objects.filter(model="b").delete()  # and the triggers keep them
    assert_totals_equal_the_ledger()
