from __future__ import annotations

import threading
from datetime import date
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, connections, transaction

from quotas.models import AIModel, Tier, UsageRecord

pytestmark = pytest.mark.django_db

DAY = date(2026, 11, 28)


def tier(**values) -> Tier:
    return Tier(**{"slug": "t", "name": "T", **values})


def errors_of(instance) -> dict[str, list[str]]:
    with pytest.raises(ValidationError) as info:
        instance.full_clean()
    return info.value.message_dict


@pytest.fixture
def user():
    return get_user_model().objects.create_user("ada")


class TestTierValidation:
    def test_a_valid_tier_passes(self):
        tier(requests_per_minute=60, burst=10, spend_per_month=Decimal("5")).full_clean()

    def test_empty_fields_mean_unlimited_and_pass(self):
        tier().full_clean()

    @pytest.mark.parametrize(
        "field", ["requests_per_day", "tokens_per_day", "max_concurrent_requests"]
    )
    def test_negative_counts_refused(self, field):
        assert field in errors_of(tier(**{field: -1}))

    def test_negative_spend_refused(self):
        messages = errors_of(tier(spend_per_month=Decimal("-0.01")))
        assert messages["spend_per_month"] == ["Ensure this value is greater than or equal to 0."]

    def test_burst_must_be_at_least_one(self):
        assert "Burst must be at least 1." in errors_of(tier(burst=0))["burst"]

    def test_requests_per_minute_zero_refused(self):
        assert errors_of(tier(requests_per_minute=0))["requests_per_minute"] == [
            "Must be at least 1, or empty for unlimited."
        ]

    def test_degrade_at_percent_at_most_100(self):
        assert "degrade_at_percent" in errors_of(tier(degrade_at_percent=101))


class TestTierModels:
    @pytest.fixture
    def models(self):
        return {
            name: AIModel.objects.create(name=name)
            for name in ("gpt-4o", "gpt-4o-mini", "gpt-4.1-nano")
        }

    def test_default_model_outside_allowed_refused(self, models):
        t = Tier.objects.create(slug="t", name="T", default_model=models["gpt-4o"])
        t.allowed_models.set([models["gpt-4o-mini"]])
        with pytest.raises(ValidationError) as info:
            t.validate_models()
        assert info.value.message_dict == {
            "default_model": ["gpt-4o is not one of this tier's allowed models."]
        }

    def test_fallback_model_outside_allowed_refused(self, models):
        t = tier(default_model=models["gpt-4o-mini"], fallback_model=models["gpt-4.1-nano"])
        with pytest.raises(ValidationError) as info:
            t.validate_models(allowed=[models["gpt-4o-mini"]])
        assert list(info.value.message_dict) == ["fallback_model"]

    def test_models_among_allowed_pass(self, models):
        t = tier(default_model=models["gpt-4o-mini"], fallback_model=models["gpt-4.1-nano"])
        t.validate_models(allowed=[models["gpt-4o-mini"], models["gpt-4.1-nano"]])

    def test_no_allowed_models_means_any(self, models):
        tier(default_model=models["gpt-4o"]).validate_models(allowed=[])


class TestDefaultTier:
    def test_migration_creates_a_default_tier(self):
        default = Tier.objects.get(is_default=True)
        assert default.slug == "default"
        assert default.requests_per_minute == 60
        assert default.tokens_per_day == 200_000
        assert default.spend_per_month == Decimal("10")

    def test_only_one_default(self):
        first = Tier.objects.get(is_default=True)
        second = Tier.objects.create(slug="pro", name="Pro", is_default=True)
        assert list(Tier.objects.filter(is_default=True)) == [second]
        first.refresh_from_db()
        assert first.is_default is False

    def test_saving_the_default_again_keeps_it(self):
        default = Tier.objects.get(is_default=True)
        default.name = "Everyone"
        default.save()
        assert Tier.objects.get(is_default=True).name == "Everyone"


class TestCost:
    def test_cost_in_micro_usd(self):
        model = AIModel(
            name="m",
            input_price_per_million=Decimal("2.50"),
            output_price_per_million=Decimal("10"),
        )
        # 1000 * 2.5 + 500 * 10 micro-USD
        assert model.cost_micros(1000, 500) == 7500

    def test_cost_rounds_up(self):
        model = AIModel(
            name="m",
            input_price_per_million=Decimal("0.15"),
            output_price_per_million=Decimal("0.60"),
        )
        assert model.cost_micros(1, 0) == 1  # 0.15 micro-USD
        assert model.cost_micros(3, 1) == 2  # 1.05 micro-USD
        assert model.cost_micros(0, 0) == 0

    def test_cached_prompt_tokens_at_the_cached_price_else_the_input_price(self):
        model = AIModel(
            name="m",
            input_price_per_million=Decimal("2.50"),
            output_price_per_million=Decimal("10"),
        )
        assert model.cost_micros(1000, 500, cached_tokens=800) == 7500  # no cached price
        model.cached_input_price_per_million = Decimal("0.25")
        # 200 * 2.5 + 800 * 0.25 + 500 * 10 micro-USD
        assert model.cost_micros(1000, 500, cached_tokens=800) == 5700
        assert model.cost_micros(100, 0, cached_tokens=800) == 25  # never more than the prompt


class TestUsageRecordAdd:
    def test_creates_then_increments(self, user):
        UsageRecord.add(user.pk, DAY, "gpt-4o", requests=1, prompt_tokens=10, cost=Decimal("0.5"))
        UsageRecord.add(user.pk, DAY, "gpt-4o", requests=1, completion_tokens=7, denied=2)
        row = UsageRecord.objects.get()
        assert (row.requests, row.prompt_tokens, row.completion_tokens, row.denied) == (
            2,
            10,
            7,
            2,
        )
        assert row.cost == Decimal("0.5")
        assert row.total_tokens == 17

    def test_a_correction_moves_an_existing_row_down(self, user):
        UsageRecord.add(user.pk, DAY, "gpt-4o", requests=1, prompt_tokens=900, cost="0.009")
        UsageRecord.add(user.pk, DAY, "gpt-4o", prompt_tokens=-850, cost=Decimal("-0.0085"))
        row = UsageRecord.objects.get()
        assert (row.requests, row.prompt_tokens, row.cost) == (1, 50, Decimal("0.0005"))

    def test_a_correction_without_a_row_keeps_what_it_adds(self, user):
        UsageRecord.add(user.pk, DAY, "gpt-4o", requests=1, prompt_tokens=-5)
        row = UsageRecord.objects.get()
        assert (row.requests, row.prompt_tokens) == (1, 0)

    def test_an_unknown_amount_is_refused_and_writes_nothing(self, user):
        with pytest.raises(TypeError, match="tokens"):
            UsageRecord.add(user.pk, DAY, "gpt-4o", requests=1, tokens=5)
        assert not UsageRecord.objects.exists()

    @pytest.mark.parametrize("upsert", [True, False])
    @pytest.mark.django_db(transaction=True)  # foreign keys are checked at commit
    def test_usage_of_a_user_deleted_meanwhile_is_dropped(self, upsert, monkeypatch):
        if not upsert:
            monkeypatch.setattr("quotas.models._UPSERT_VENDORS", frozenset())
        gone = get_user_model().objects.create_user("gone")
        pk = gone.pk
        gone.delete()
        UsageRecord.add(pk, DAY, "gpt-4o", requests=1, prompt_tokens=5)
        assert not UsageRecord.objects.exists()

    def test_a_correction_below_zero_is_refused(self, user):
        UsageRecord.add(user.pk, DAY, "gpt-4o", requests=1, prompt_tokens=5)
        with pytest.raises(IntegrityError), transaction.atomic():
            UsageRecord.add(user.pk, DAY, "gpt-4o", prompt_tokens=-6)
        assert UsageRecord.objects.get().prompt_tokens == 5

    def test_databases_without_upsert_add_the_same(self, user, monkeypatch):
        monkeypatch.setattr("quotas.models._UPSERT_VENDORS", frozenset())
        UsageRecord.add(user.pk, DAY, "gpt-4o", requests=1, prompt_tokens=10, cost="0.5")
        UsageRecord.add(user.pk, DAY, "gpt-4o", requests=1, completion_tokens=7)
        row = UsageRecord.objects.get()
        assert (row.requests, row.prompt_tokens, row.completion_tokens) == (2, 10, 7)
        assert row.cost == Decimal("0.5")

    def test_one_row_per_user_day_and_model(self, user):
        UsageRecord.add(user.pk, DAY, "gpt-4o", requests=1)
        UsageRecord.add(user.pk, DAY, "gpt-4o-mini", requests=1)
        UsageRecord.add(user.pk, date(2026, 11, 29), "gpt-4o", requests=1)
        assert UsageRecord.objects.count() == 3


@pytest.mark.django_db(transaction=True)
def test_add_under_concurrency_loses_nothing():
    if connection.vendor != "postgresql":
        pytest.skip("concurrent writers need PostgreSQL")
    user = get_user_model().objects.create_user("ada")
    threads_n, each = 12, 5
    barrier = threading.Barrier(threads_n)
    failures: list[BaseException] = []

    def work() -> None:
        try:
            barrier.wait()
            for _ in range(each):
                UsageRecord.add(user.pk, DAY, "gpt-4o", requests=1, prompt_tokens=3)
        except BaseException as exc:  # pragma: no cover - reported below
            failures.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=work) for _ in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    row = UsageRecord.objects.get()
    assert row.requests == threads_n * each
    assert row.prompt_tokens == threads_n * each * 3
