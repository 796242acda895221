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
    requests_per_day=1000,
    tokens_per_day=50_000,
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
    assert limits["requests_per_minute"].burst == 10
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
        "tokens_per_month",
        "spend_per_month",
    ]


def test_a_state_is_known_by_its_name_else_by_its_code() -> None:
    assert kind_of("org_spend_per_month", "ms").label == "Organisation spend this month"
    renamed = kind_of("team_tokens", "dt")
    assert (renamed.field, renamed.resource, renamed.degrades) == ("team_tokens", "tokens", True)
    provider = kind_of("provider_tokens_per_minute", "rt")
    assert (provider.period, provider.resource, provider.is_rate) == ("rate", "tokens", True)
