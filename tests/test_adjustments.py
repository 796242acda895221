"""Boosts and resets: effective at once, and calls in flight stay counted."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from quotas import ledger_mode
from quotas.adjustments import grant_boost, reset_today
from quotas.engine import CountersUnavailable
from quotas.models import Tier, UserQuota
from quotas.policy import quota_for_user
from quotas.services import service

# Counters are corrected once the adjustment is committed: these tests commit.
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def user():
    tier = Tier.objects.create(slug="day", name="Day", tokens_per_day=1000, requests_per_day=10)
    user = get_user_model().objects.create_user("ada")
    UserQuota.objects.create(user=user, tier=tier)
    return user


def reserve(user, tokens: int):
    return service.reserve(user.pk, quota_for_user(user), model="m", tokens=tokens, spend=0)


def used_tokens(user) -> int:
    return service.usage(user.pk, quota_for_user(user)).day_usage.tokens


def test_a_boost_is_effective_at_once(user):
    _, grant = reserve(user, 900)
    service.settle(grant, prompt_tokens=900, completion_tokens=0, cost=0)
    assert not reserve(user, 200)[0].allowed

    grant_boost(user.pk, tokens=500)

    assert used_tokens(user) == 400
    assert reserve(user, 600)[0].allowed
    assert not reserve(user, 1)[0].allowed


def test_a_boost_keeps_the_calls_in_flight_counted(user):
    _, settled = reserve(user, 300)
    service.settle(settled, prompt_tokens=300, completion_tokens=0, cost=0)
    _, in_flight = reserve(user, 600)  # the provider has not answered yet

    grant_boost(user.pk, tokens=200)

    assert used_tokens(user) == 300 - 200 + 600
    assert not reserve(user, 301)[0].allowed  # the 600 in flight still count
    service.settle(in_flight, prompt_tokens=100, completion_tokens=400, cost=0)
    assert used_tokens(user) == 300 - 200 + 500
    assert reserve(user, 400)[0].allowed
    assert not reserve(user, 1)[0].allowed


def test_a_reset_gives_back_the_day_but_not_the_calls_in_flight(user):
    _, settled = reserve(user, 700)
    service.settle(settled, prompt_tokens=700, completion_tokens=0, cost=0)
    _, in_flight = reserve(user, 250)

    reset_today(user.pk)

    assert used_tokens(user) == 250
    assert not reserve(user, 751)[0].allowed
    service.settle(in_flight, prompt_tokens=40, completion_tokens=60, cost=0)
    assert used_tokens(user) == 100


def test_with_redis_unreachable_the_boost_is_kept_and_applied_when_it_answers(user, monkeypatch):
    _, grant = reserve(user, 1000)
    service.settle(grant, prompt_tokens=1000, completion_tokens=0, cost=0)

    def unreachable(*_args, **_kwargs):
        raise CountersUnavailable("connection refused")

    with monkeypatch.context() as patched:
        patched.setattr("quotas.services.check_user", unreachable)
        with pytest.raises(CountersUnavailable):
            grant_boost(user.pk, tokens=400)
    assert ledger_mode.has_dirty()

    assert reserve(user, 400)[0].allowed  # corrected before this decision
    assert not reserve(user, 1)[0].allowed
