from __future__ import annotations

import time
from datetime import timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from quotas.conf import conf
from quotas.engine import Usage, current_windows, windows_around
from quotas.engine_factory import get_engine
from quotas.ledger import ledger_usage, window_days
from quotas.models import Tier, UsageRecord, UserQuota
from quotas.policy import quota_for_user
from quotas.reconcile import in_flight
from quotas.services import QuotaService
from quotas.subjects import user_subject

pytestmark = pytest.mark.django_db

service = QuotaService()


def make_user(name: str):
    tier = Tier.objects.create(
        slug=f"tier-{name}", name=name, tokens_per_day=100_000, spend_per_month=Decimal(10)
    )
    user = get_user_model().objects.create_user(name)
    UserQuota.objects.create(user=user, tier=tier)
    return user


def call(user, tokens: int = 600, spend: int = 500, used: tuple[int, int, int] | None = None):
    """Reserve one AI call; settle it to `used` (prompt, completion, cost) if given."""
    _, grant = service.reserve(
        user.pk, quota_for_user(user), model="gpt-4o-mini", tokens=tokens, spend=spend
    )
    assert grant is not None
    if used is not None:
        prompt, completion, cost = used
        service.settle(grant, prompt_tokens=prompt, completion_tokens=completion, cost=cost)
    return grant


def windows():
    return current_windows(int(time.time() * 1_000_000), conf.TIME_ZONE)


def tamper(user, kind: str, field: str, by: int) -> None:
    engine = get_engine()
    engine.client.hincrby(engine.state_key(user_subject(user.pk)), f"{kind}{field}", by)


def counters(user) -> tuple[Usage, Usage]:
    decision = service.usage(user.pk, quota_for_user(user))
    return decision.day_usage, decision.month_usage


def reconcile(*args: str) -> list[str]:
    out = StringIO()
    call_command("quota_reconcile", "--no-progress", *args, stdout=out)
    return out.getvalue().splitlines()


@pytest.fixture
def ada():
    user = make_user("ada")
    call(user, used=(100, 200, 300))
    call(user, used=(50, 50, 40))
    return user


def test_consistent_counters_report_no_drift(ada):
    call(ada)  # in flight
    assert reconcile() == ["Checked 1 user, 2 windows: no drift."]


def test_tampered_counters_are_reported(ada):
    tamper(ada, "d", "t", 500)
    tamper(ada, "d", "s", 7)
    header, tokens, spend, summary = reconcile()
    assert header.split() == ["user", "window", "field", "redis", "ledger", "in", "flight", "drift"]
    label = windows()[0].label
    day = f"{label[:4]}-{label[4:6]}-{label[6:]}"
    assert tokens.split() == ["ada", "day", day, "tokens", "900", "400", "0", "+500"]
    assert spend.split()[3:] == ["spend", "0.000347", "0.000340", "0.000000", "+0.000007"]
    assert summary == (
        "Checked 1 user, 2 windows: drift in 1 window of 1 user. Run with --fix to repair."
    )
    assert counters(ada)[0].tokens == 900  # reporting repairs nothing


def test_fix_sets_the_counters_to_the_ledger(ada):
    tamper(ada, "d", "r", 3)
    tamper(ada, "m", "t", -150)
    output = reconcile("--fix")
    assert output[-1] == "Checked 1 user, 2 windows: drift in 2 windows of 1 user. Fixed 2."
    assert "-150" in output[2]
    day, month = windows()
    assert counters(ada) == (ledger_usage(ada.pk, day), ledger_usage(ada.pk, month))
    assert counters(ada)[0] == Usage(requests=2, tokens=400, spend=340)
    assert reconcile() == ["Checked 1 user, 2 windows: no drift."]


def test_in_flight_reservations_are_not_drift_after_fix(ada):
    grant = call(ada, tokens=1_000, spend=800)
    tamper(ada, "d", "t", 5_000)
    tamper(ada, "m", "s", -100)
    assert reconcile("--fix")[-1].endswith("Fixed 2.")
    assert reconcile() == ["Checked 1 user, 2 windows: no drift."]
    held = Usage(requests=3, tokens=1_400, spend=1_140)  # the ledger plus the call in flight
    assert counters(ada) == (held, held)

    service.settle(grant, prompt_tokens=10, completion_tokens=20, cost=30)
    settled = Usage(requests=3, tokens=430, spend=370)
    assert counters(ada) == (settled, settled)
    assert reconcile() == ["Checked 1 user, 2 windows: no drift."]


def test_missing_counters_are_seeded_from_the_ledger(ada, redis_client):
    redis_client.flushall()
    assert reconcile() == ["Checked 1 user, 2 windows: no drift."]
    assert counters(ada)[1] == Usage(requests=2, tokens=400, spend=340)


def test_only_users_with_ledger_rows_this_month_are_checked(ada):
    grace = make_user("grace")
    first, _ = window_days(windows()[1])
    UsageRecord.add(grace.pk, first - timedelta(days=1), "gpt-4o-mini", requests=1)
    assert reconcile()[-1] == "Checked 1 user, 2 windows: no drift."


def test_one_user(ada):
    grace = make_user("grace")
    call(grace, used=(1, 1, 1))
    tamper(ada, "d", "t", 1)
    tamper(grace, "d", "t", 1)
    rows = reconcile("--user", "grace")
    assert [row.split()[0] for row in rows[1:-1]] == ["grace"]
    assert rows[-1].startswith("Checked 1 user, 2 windows: drift in 1 window of 1 user.")


def test_unknown_user():
    with pytest.raises(CommandError, match="No user named 'nobody'"):
        reconcile("--user", "nobody")


def test_a_reservation_counts_in_the_window_it_started_in():
    days, _ = windows_around(int(time.time() * 1_000_000), "UTC")
    lease_us = 300_000_000
    # Taken 4 minutes before midnight, expiring 1 minute after.
    leases = [(b"ab12:1:100:5", days[1].start_us + 60_000_000)]
    assert in_flight(leases, days[0], lease_us) == Usage(requests=1, tokens=100, spend=5)
    assert in_flight(leases, days[1], lease_us) == Usage()


@pytest.mark.parametrize("count", [1_200])
def test_queries_are_bounded_per_batch_of_users(count, django_assert_max_num_queries):
    """Three queries for each batch of 500 users (and two to count and list the users)."""
    User = get_user_model()
    User.objects.bulk_create(User(username=f"u{i}") for i in range(count))
    users = list(User.objects.order_by("pk"))
    day, _month = windows()
    today = window_days(day)[0]
    UsageRecord.objects.bulk_create(
        UsageRecord(user=user, day=today, model="gpt-4o-mini", requests=1, prompt_tokens=i)
        for i, user in enumerate(users)
    )
    assert reconcile()[-1] == f"Checked {count} users, {2 * count} windows: no drift."  # seeds

    with django_assert_max_num_queries(2 + 3 * 3):
        assert reconcile()[-1] == f"Checked {count} users, {2 * count} windows: no drift."
    tamper(users[7], "d", "t", 5)
    assert "drift in 1 window of 1 user" in reconcile()[-1]
