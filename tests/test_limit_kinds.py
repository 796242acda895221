"""The registry of limit kinds: every consumer derives from it."""

from __future__ import annotations

from decimal import Decimal

import pytest

from quotas.engine import Usage
from quotas.limit_kinds import BUDGETS, BY_FIELD, KINDS, kind_of
from quotas.models import Tier, UserQuota
from quotas.policy import Quota

EVERY_LIMIT = Quota(
    requests_per_minute=60,
    burst=10,
    tokens_per_minute=20_000,
    requests_per_day=1000,
    tokens_per_day=50_000,
    spend_per_day=Decimal("2"),
    tokens_per_month=1_000_000,
    spend_per_month=Decimal("12.5"),
    max_concurrent_requests=3,
)


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.field)
def test_every_kind_is_set_on_tiers_and_overridden_on_quotas(kind) -> None:
    for model in (Tier, UserQuota):
        field = model._meta.get_field(kind.field)
        assert field.null and field.blank  # empty: unlimited, or the tier's value


def test_a_quota_with_every_limit_set_enforces_every_kind() -> None:
    limits = {limit.name: limit for limit in EVERY_LIMIT.limits()}

    assert list(limits) == [kind.field for kind in KINDS]
    assert limits["spend_per_month"].amount == 12_500_000  # micro-USD
    assert limits["spend_per_day"].amount == 2_000_000
    assert limits["requests_per_minute"].burst == 10
    assert limits["tokens_per_minute"].capacity == 20_000  # one minute's worth at once
    assert limits["tokens_per_day"].burst is None


def test_the_throttle_checks_only_the_kinds_charged_on_every_request() -> None:
    names = [limit.name for limit in EVERY_LIMIT.limits(budgets=False)]

    assert names == ["requests_per_minute", "requests_per_day"]


def test_an_unset_or_zero_rate_is_not_enforced() -> None:
    assert Quota().limits() == ()
    assert Quota(requests_per_minute=0).limits() == ()


@pytest.mark.parametrize(
    ("field", "period", "resource", "budget", "rate", "money"),
    [
        ("requests_per_minute", "rate", "requests", False, True, False),
        ("tokens_per_minute", "rate", "tokens", False, True, False),
        ("spend_per_day", "day", "spend", True, False, True),
        ("requests_per_day", "day", "requests", True, False, False),
        ("tokens_per_day", "day", "tokens", True, False, False),
        ("tokens_per_month", "month", "tokens", True, False, False),
        ("spend_per_month", "month", "spend", True, False, True),
        ("max_concurrent_requests", "in_flight", "requests", False, True, False),
    ],
)
def test_what_each_kind_counts(field, period, resource, budget, rate, money) -> None:
    kind = BY_FIELD[field]

    assert (kind.period, kind.resource) == (period, resource)
    assert (kind.is_budget, kind.is_rate, kind.is_money) == (budget, rate, money)
    assert (
        kind.amount_of(Usage(requests=1, tokens=2, spend=3))
        == {
            "requests": 1,
            "tokens": 2,
            "spend": 3,
        }[resource]
    )


def test_budgets_are_the_day_and_month_kinds() -> None:
    assert [kind.field for kind in BUDGETS] == [
        "requests_per_day",
        "tokens_per_day",
        "spend_per_day",
        "tokens_per_month",
        "spend_per_month",
    ]


def test_a_state_is_known_by_its_name_else_by_its_code() -> None:
    assert kind_of("org_spend_per_month", "ms").label == "Organisation spend this month"
    renamed = kind_of("team_tokens", "dt")
    assert (renamed.field, renamed.resource, renamed.degrades) == ("team_tokens", "tokens", True)
    provider = kind_of("provider_tokens_per_minute", "rt")
    assert (provider.period, provider.resource, provider.is_rate) == ("rate", "tokens", True)


# The two kinds added through the registry, enforced end to end by the service.


@pytest.fixture
def service(monkeypatch):
    from quotas.services import QuotaService

    service = QuotaService()
    now = [1_767_225_600.0]  # 2026-01-01 00:00 UTC
    service.clock = lambda: now[0]
    service.now = now
    return service


def on_tier(**limits):
    from django.contrib.auth import get_user_model

    tier = Tier.objects.create(slug="t", name="T", **limits)
    user = get_user_model().objects.create_user("ada")
    UserQuota.objects.create(user=user, tier=tier)
    return user


def reserve(service, user, tokens: int, spend: int = 0):
    from quotas.policy import quota_for_user

    return service.reserve(user.pk, quota_for_user(user), model="m", tokens=tokens, spend=spend)


@pytest.mark.django_db
def test_tokens_per_minute_refill_with_time_and_settle_gives_back_the_unused(service) -> None:
    user = on_tier(tokens_per_minute=1000)

    decision, first = reserve(service, user, 800)
    assert decision.allowed
    denied, _ = reserve(service, user, 400)
    assert (denied.allowed, denied.denied_by) == (False, "tokens_per_minute")
    assert 11 <= denied.retry_after <= 13  # 200 more tokens at 1,000 a minute

    service.settle(first, prompt_tokens=100, completion_tokens=100, cost=0)
    assert reserve(service, user, 400)[0].allowed  # 600 unused came back at once
    assert not reserve(service, user, 401)[0].allowed
    service.now[0] += 24.1  # 400 tokens refill in 24 s
    assert reserve(service, user, 400)[0].allowed


@pytest.mark.django_db
def test_spend_per_day_rolls_over_at_midnight_in_the_quota_time_zone(service, settings) -> None:
    settings.QUOTAS = {**settings.QUOTAS, "TIME_ZONE": "America/New_York"}
    user = on_tier(spend_per_day=Decimal("1"))
    service.now[0] = 1_767_329_940.0  # 2026-01-01 23:59 in New York (04:59 UTC)

    _, grant = reserve(service, user, 10, spend=900_000)
    service.settle(grant, prompt_tokens=5, completion_tokens=5, cost=900_000)
    denied, _ = reserve(service, user, 10, spend=200_000)
    assert (denied.allowed, denied.denied_by) == (False, "spend_per_day")
    assert denied.retry_after <= 60

    service.now[0] += 120  # 00:01 in New York, the same UTC day
    assert reserve(service, user, 10, spend=200_000)[0].allowed
