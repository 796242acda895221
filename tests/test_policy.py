from __future__ import annotations

import threading
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.db import connection, connections, transaction

from quotas import policy
from quotas.engine_factory import get_engine
from quotas.models import AIModel, Tier, UserQuota
from quotas.policy import quota_for_anonymous, quota_for_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def user():
    return get_user_model().objects.create_user("ada")


def write_elsewhere(tier: Tier, **values: int) -> None:
    """A write by another process: this one's cache hears nothing of it."""
    table = connection.ops.quote_name(Tier._meta.db_table)
    sets = ", ".join(f"{connection.ops.quote_name(name)} = %s" for name in values)
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {table} SET {sets} WHERE id = %s", [*values.values(), tier.pk])


@pytest.fixture
def pro():
    return Tier.objects.create(
        slug="pro",
        name="Pro",
        requests_per_minute=120,
        burst=20,
        requests_per_day=5000,
        tokens_per_day=1_000_000,
        spend_per_month=Decimal("100"),
        max_concurrent_requests=8,
    )


class TestQuotaForUser:
    def test_without_user_quota_the_default_tier(self, user):
        quota = quota_for_user(user)
        assert quota.tier_slug == "default"
        assert quota.requests_per_minute == 60
        assert quota.tokens_per_day == 200_000
        assert quota.blocked is False

    def test_without_any_default_tier_no_tier_never_unlimited(self, user):
        Tier.objects.update(is_default=False)
        quota = quota_for_user(user)
        assert quota.no_tier is True
        assert quota.tier_name == "No tier"

    def test_a_quota_without_a_tier_and_no_default_has_no_tier(self, user, pro):
        UserQuota.objects.create(user=user, tokens_per_day=50)
        Tier.objects.update(is_default=False)
        assert quota_for_user(user).no_tier is True
        pro.is_default = True
        pro.save()
        assert (quota_for_user(user).no_tier, quota_for_user(user).tokens_per_day) == (False, 50)

    def test_anonymous_without_any_default_tier_no_tier(self):
        Tier.objects.update(is_default=False)
        assert quota_for_anonymous().no_tier is True

    def test_the_users_tier(self, user, pro):
        UserQuota.objects.create(user=user, tier=pro)
        quota = quota_for_user(user)
        assert (quota.tier_slug, quota.requests_per_day, quota.spend_per_month) == (
            "pro",
            5000,
            Decimal("100"),
        )

    def test_user_quota_without_tier_uses_the_default(self, user):
        UserQuota.objects.create(user=user, tokens_per_day=7)
        quota = quota_for_user(user)
        assert quota.tier_slug == "default"
        assert quota.tokens_per_day == 7

    def test_overrides_win_over_the_tier(self, user, pro):
        UserQuota.objects.create(user=user, tier=pro, tokens_per_day=50, burst=2)
        quota = quota_for_user(user)
        assert quota.tokens_per_day == 50
        assert quota.burst == 2
        assert quota.requests_per_day == 5000  # not overridden

    def test_blocked(self, user, pro):
        UserQuota.objects.create(user=user, tier=pro, blocked=True)
        assert quota_for_user(user).blocked is True

    def test_inactive_models_not_allowed(self, user, pro):
        models = [
            AIModel.objects.create(name="gpt-4o-mini"),
            AIModel.objects.create(name="gpt-4o", active=False),
            AIModel.objects.create(name="gpt-4.1-nano"),
        ]
        pro.allowed_models.set(models)
        pro.default_model = models[0]
        pro.fallback_model = models[2]
        pro.save()
        UserQuota.objects.create(user=user, tier=pro)
        quota = quota_for_user(user)
        assert quota.allowed_models == ("gpt-4.1-nano", "gpt-4o-mini")
        assert (quota.default_model, quota.fallback_model) == ("gpt-4o-mini", "gpt-4.1-nano")

    def test_engine_limits_of_the_quota(self, user, pro):
        UserQuota.objects.create(user=user, tier=pro)
        limits = {limit.name: limit for limit in quota_for_user(user).limits()}
        assert limits["requests_per_minute"].capacity == 20
        assert limits["spend_per_month"].amount == 100_000_000  # micro-USD
        assert "tokens_per_month" not in limits  # empty: unlimited
        request_only = quota_for_user(user).limits(budgets=False)
        assert [limit.name for limit in request_only] == [
            "requests_per_minute",
            "requests_per_day",
        ]


class TestAnonymous:
    def test_default_tier_by_default(self):
        assert quota_for_anonymous().tier_slug == "default"

    def test_the_named_tier(self, settings):
        Tier.objects.create(slug="anon", name="Anonymous", requests_per_minute=5)
        settings.QUOTAS = {**settings.QUOTAS, "ANONYMOUS_TIER": "anon"}
        quota = quota_for_anonymous()
        assert (quota.tier_slug, quota.requests_per_minute) == ("anon", 5)


class TestCache:
    def test_saving_a_tier_is_seen_at_once(self, user, pro):
        UserQuota.objects.create(user=user, tier=pro)
        assert quota_for_user(user).tokens_per_day == 1_000_000
        pro.tokens_per_day = 10
        pro.save()
        assert quota_for_user(user).tokens_per_day == 10

    def test_saving_a_user_quota_is_seen_at_once(self, user, pro):
        assert quota_for_user(user).tier_slug == "default"
        override = UserQuota.objects.create(user=user, tier=pro)
        assert quota_for_user(user).tier_slug == "pro"
        override.blocked = True
        override.save()
        assert quota_for_user(user).blocked is True
        override.delete()
        assert quota_for_user(user).tier_slug == "default"

    def test_changing_allowed_models_is_seen_at_once(self, user, pro):
        UserQuota.objects.create(user=user, tier=pro)
        assert quota_for_user(user).allowed_models == ()
        pro.allowed_models.add(AIModel.objects.create(name="gpt-4o-mini"))
        assert quota_for_user(user).allowed_models == ("gpt-4o-mini",)

    def test_a_change_by_another_process(self, settings, user, pro):
        settings.QUOTAS = {**settings.QUOTAS, "POLICY_CACHE_SECONDS": 0}
        UserQuota.objects.create(user=user, tier=pro)
        assert quota_for_user(user).tokens_per_day == 1_000_000
        # Another process changes the database (nothing tells this one) ...
        write_elsewhere(pro, tokens_per_day=10)
        assert quota_for_user(user).tokens_per_day == 1_000_000  # still cached
        # ... and bumps the shared policy version.
        get_engine().bump_policy_version()
        assert quota_for_user(user).tokens_per_day == 10

    def test_another_process_seen_only_after_the_cache_interval(
        self, settings, monkeypatch, user, pro
    ):
        clock = [1000.0]
        monkeypatch.setattr(policy.time, "monotonic", lambda: clock[0])
        settings.QUOTAS = {**settings.QUOTAS, "POLICY_CACHE_SECONDS": 30}
        UserQuota.objects.create(user=user, tier=pro)
        assert quota_for_user(user).tokens_per_day == 1_000_000
        write_elsewhere(pro, tokens_per_day=10)
        get_engine().bump_policy_version()
        clock[0] += 29
        assert quota_for_user(user).tokens_per_day == 1_000_000
        clock[0] += 2
        assert quota_for_user(user).tokens_per_day == 10


@pytest.mark.django_db(transaction=True)
def test_a_read_during_the_saving_transaction_does_not_stick(settings):
    """Another worker reading while the admin's save is uncommitted must not keep old limits."""
    if connection.vendor != "postgresql":
        pytest.skip("a concurrent reader during a write transaction needs PostgreSQL")
    settings.QUOTAS = {**settings.QUOTAS, "POLICY_CACHE_SECONDS": 0}
    tier = Tier.objects.create(slug="pro", name="Pro", tokens_per_day=1000)
    user = get_user_model().objects.create_user("ada")
    UserQuota.objects.create(user=user, tier=tier)
    seen: list[int | None] = []

    def other_worker() -> None:
        try:
            seen.append(quota_for_user(user).tokens_per_day)
        finally:
            connections.close_all()

    with transaction.atomic():
        tier.tokens_per_day = 10
        tier.save()
        worker = threading.Thread(target=other_worker)
        worker.start()
        worker.join()
    assert seen == [1000]  # the change was not committed yet
    assert quota_for_user(user).tokens_per_day == 10


class TestCachedOnly:
    """Lookups an event loop makes without I/O: from the cache, or NotCached."""

    def test_a_cold_cache_raises_and_loads_nothing(self, user, django_assert_num_queries):
        policy.cache.clear()
        with django_assert_num_queries(0), pytest.raises(policy.NotCached), policy.cached_only():
            quota_for_user(user)

    def test_a_warm_cache_answers_without_a_query(self, user, pro, django_assert_num_queries):
        UserQuota.objects.create(user=user, tier=pro)
        expected = quota_for_user(user)
        with django_assert_num_queries(0), policy.cached_only():
            assert quota_for_user(user) == expected

    def test_a_cache_due_for_its_version_check_raises(self, settings, monkeypatch, user):
        clock = [1000.0]
        monkeypatch.setattr(policy.time, "monotonic", lambda: clock[0])
        settings.QUOTAS = {**settings.QUOTAS, "POLICY_CACHE_SECONDS": 5}
        quota_for_user(user)
        clock[0] += 5
        with pytest.raises(policy.NotCached), policy.cached_only():
            quota_for_user(user)
        quota_for_user(user)  # checks the version, so the loop may read it again
        with policy.cached_only():
            quota_for_user(user)
