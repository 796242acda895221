from __future__ import annotations

import threading
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from django.contrib.auth import get_user_model
from django.db import connection, connections
from django.utils import timezone

from quotas.conf import conf
from quotas.models import QuotaAdjustment, Tier, UsageRecord, UserQuota
from quotas.policy import quota_for_user
from quotas.services import Blocked, QuotaService

pytestmark = pytest.mark.django_db

service = QuotaService()


def today():
    return timezone.localdate(timezone=ZoneInfo(conf.TIME_ZONE))


def make_user(name: str = "ada", **tier_values):
    tier = Tier.objects.create(slug=f"tier-{name}", name=name, **tier_values)
    user = get_user_model().objects.create_user(name)
    UserQuota.objects.create(user=user, tier=tier)
    return user


@pytest.fixture
def user():
    return make_user(
        requests_per_day=10,
        tokens_per_day=1000,
        tokens_per_month=5000,
        spend_per_month=Decimal("1"),
        max_concurrent_requests=2,
    )


def reserve(user, tokens: int, spend: int = 0, model: str = "gpt-4o-mini"):
    return service.reserve(user.pk, quota_for_user(user), model=model, tokens=tokens, spend=spend)


def usage(user):
    return service.usage(user.pk, quota_for_user(user))


def test_reserve_holds_the_worst_case(user):
    decision, grant = reserve(user, 600, spend=500)
    assert decision.allowed and grant is not None
    now = usage(user)
    assert (now.day_usage.requests, now.day_usage.tokens, now.day_usage.spend) == (1, 600, 500)
    assert now.state("cc").used == 1
    assert UsageRecord.objects.count() == 0  # nothing settled yet


def test_settle_writes_the_ledger_and_moves_counters_to_actual(user):
    _, grant = reserve(user, 600, spend=500)
    service.settle(grant, prompt_tokens=100, completion_tokens=200, cost=300)
    row = UsageRecord.objects.get()
    assert (row.user_id, row.day, row.model) == (user.pk, today(), "gpt-4o-mini")
    assert (row.requests, row.prompt_tokens, row.completion_tokens) == (1, 100, 200)
    assert row.cost == Decimal("0.000300")
    assert row.denied == 0
    now = usage(user)
    assert (now.day_usage.requests, now.day_usage.tokens, now.day_usage.spend) == (1, 300, 300)
    assert now.month_usage.tokens == 300
    assert now.state("dt").remaining == 700
    assert now.state("cc").used == 0


def test_settle_under_another_model(user):
    _, grant = reserve(user, 100)
    service.settle(grant, prompt_tokens=1, completion_tokens=1, cost=0, model="gpt-4.1-nano")
    assert UsageRecord.objects.get().model == "gpt-4.1-nano"


def test_refund_gives_everything_back(user):
    _, grant = reserve(user, 600, spend=500)
    service.refund(grant)
    now = usage(user)
    assert (now.day_usage.requests, now.day_usage.tokens, now.day_usage.spend) == (0, 0, 0)
    assert now.state("cc").used == 0
    assert UsageRecord.objects.count() == 0
    decision, _ = reserve(user, 1000)
    assert decision.allowed


def test_denied_reserve_charges_nothing_and_is_counted(user):
    decision, grant = reserve(user, 1500)
    assert not decision.allowed and grant is None
    assert decision.denied_by == "tokens_per_day"
    assert decision.retry_after > 0
    row = UsageRecord.objects.get()
    assert (row.denied, row.requests, row.prompt_tokens) == (1, 0, 0)
    now = usage(user)
    assert (now.day_usage.requests, now.day_usage.tokens) == (0, 0)
    assert now.state("cc").used == 0


def test_concurrency_limit(user):
    held = [reserve(user, 10)[1] for _ in range(2)]
    decision, grant = reserve(user, 10)
    assert grant is None and decision.denied_by == "max_concurrent_requests"
    service.settle(held[0], prompt_tokens=1, completion_tokens=1, cost=0)
    assert reserve(user, 10)[0].allowed


def test_blocked_user():
    user = make_user(tokens_per_day=1000)
    UserQuota.objects.filter(user=user).update(blocked=True)
    with pytest.raises(Blocked):
        service.reserve(user.pk, quota_for_user(user), model="gpt-4o-mini", tokens=1, spend=0)
    assert usage(user).day_usage.requests == 0


class TestOrgSpendCap:
    @pytest.fixture(autouse=True)
    def cap(self, settings):
        settings.QUOTAS = {**settings.QUOTAS, "ORG_SPEND_PER_MONTH": 1}  # USD

    def test_denied_when_the_org_month_would_pass_the_cap(self, user):
        colleague = get_user_model().objects.create_user("bob")
        UsageRecord.add(colleague.pk, today(), "gpt-4o", requests=3, cost=Decimal("0.9"))
        decision, grant = reserve(user, 100, spend=200_000)
        assert grant is None
        assert decision.denied_by == "org_spend_per_month"
        # The user's own reservation is given back, and the denial is in the ledger.
        now = usage(user)
        assert (now.day_usage.requests, now.day_usage.tokens, now.day_usage.spend) == (0, 0, 0)
        assert now.state("cc").used == 0
        assert UsageRecord.objects.get(user=user).denied == 1

    def test_settled_spend_counts_against_the_cap(self, user):
        other = make_user("bob", spend_per_month=Decimal("10"))
        _, grant = reserve(user, 100, spend=600_000)
        assert grant is not None
        service.settle(grant, prompt_tokens=10, completion_tokens=10, cost=500_000)
        assert reserve(other, 100, spend=500_000)[1] is not None
        decision, grant = reserve(other, 100, spend=100)
        assert grant is None and decision.denied_by == "org_spend_per_month"

    def test_below_the_cap_allowed(self, user):
        _, grant = reserve(user, 100, spend=999_999)
        assert grant is not None


class TestRehydration:
    def spend_the_day(self, user):
        _, grant = reserve(user, 1000)
        service.settle(grant, prompt_tokens=400, completion_tokens=600, cost=0)
        assert not reserve(user, 1)[0].allowed

    def test_flushed_counters_are_seeded_from_the_ledger(self, user, redis_client):
        self.spend_the_day(user)
        redis_client.flushdb()
        decision, grant = reserve(user, 1)
        assert grant is None and decision.denied_by == "tokens_per_day"
        now = usage(user)
        assert (now.day_usage.requests, now.day_usage.tokens) == (1, 1000)
        assert now.month_usage.tokens == 1000

    def test_a_boost_reduces_the_seeded_usage(self, user, redis_client):
        self.spend_the_day(user)
        QuotaAdjustment.objects.create(
            user=user, day=today(), kind=QuotaAdjustment.BOOST, tokens=500, requests=1
        )
        redis_client.flushdb()
        assert usage(user).day_usage.tokens == 500
        assert not reserve(user, 501)[0].allowed
        assert reserve(user, 500)[0].allowed


@pytest.mark.django_db(transaction=True)
def test_concurrent_reservations_never_overspend():
    if connection.vendor != "postgresql":
        pytest.skip("concurrent ledger writers need PostgreSQL")
    user = make_user(tokens_per_day=2000)
    barrier = threading.Barrier(40)
    granted: list[int] = []
    failures: list[BaseException] = []

    def work(i: int) -> None:
        try:
            quota = quota_for_user(user)
            barrier.wait()
            _, grant = service.reserve(user.pk, quota, model="m", tokens=300, spend=0)
            if grant is not None:
                actual = 100 + (i * 37) % 201  # 100..300, never above the reservation
                service.settle(
                    grant, prompt_tokens=actual // 2, completion_tokens=actual - actual // 2, cost=0
                )
                granted.append(actual)
        except BaseException as exc:  # pragma: no cover - reported below
            failures.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    rows = UsageRecord.objects.filter(user=user)
    settled = sum(r.total_tokens for r in rows)
    assert settled == sum(granted)
    assert sum(r.requests for r in rows) == len(granted)
    assert 6 <= len(granted) < 40
    assert settled <= 2000
    assert usage(user).day_usage.tokens == settled
