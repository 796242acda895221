"""Alert thresholds: each crossing fires once per user (or team), limit, percent and window,
under concurrency too; rules of a tier or team; soft tiers count and alert, never refuse."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.db.models import Sum

import quotas
from quotas import alerts
from quotas.models import AIModel, Alert, AlertRule, Team, Tier, UsageRecord, UserQuota
from quotas.signals import quota_exceeded, threshold_crossed

HELLO = [{"role": "user", "content": "Hello there"}]


@pytest.fixture(autouse=True)
def fresh_memo() -> None:
    alerts.fired.clear()


@pytest.fixture
def make_user(db: None, mock_provider: Any):
    model = AIModel.objects.create(
        name="gpt-4o-mini",
        input_price_per_million=Decimal("0.15"),
        output_price_per_million=Decimal("0.60"),
    )

    def make(name: str = "ada", team: Team | None = None, **limits: Any) -> Any:
        tier = Tier.objects.create(
            slug=f"tier-{name}", name=f"Tier {name}", default_model=model, **limits
        )
        tier.allowed_models.set([model])
        user = get_user_model().objects.create_user(name, email=f"{name}@example.com")
        UserQuota.objects.create(user=user, tier=tier, team=team)
        return user

    return make


class Received:
    """What a signal delivered, from any thread."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def __call__(self, sender: Any, **kwargs: Any) -> None:
        with self.lock:
            self.calls.append(kwargs)


@pytest.fixture
def crossed():
    received = Received()
    threshold_crossed.connect(received, weak=False)
    yield received
    threshold_crossed.disconnect(received)


@pytest.fixture
def exceeded():
    received = Received()
    quota_exceeded.connect(received, weak=False)
    yield received
    quota_exceeded.disconnect(received)


def call(user: Any, prompt: int = 50, completion: int = 50) -> None:
    with quotas.reserve(user, messages=HELLO, max_tokens=completion) as metered:
        metered.settle(prompt_tokens=prompt, completion_tokens=completion)


def fired() -> set[tuple[str, str, int]]:
    return set(Alert.objects.values_list("subject", "limit", "percent"))


@pytest.mark.django_db(transaction=True)
def test_40_concurrent_calls_fire_each_crossing_once(real_redis, make_user, crossed) -> None:
    if connection.vendor == "sqlite":
        pytest.skip("threads share SQLite's one in-memory test connection")
    user = make_user(requests_per_day=40, tokens_per_day=5_000)

    def one(_: int) -> None:
        try:
            call(user)  # 100 tokens each: 40 calls are 100% of requests, 80% of tokens
        finally:
            connection.close()

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(40)))

    subject = f"u:{user.pk}"
    assert UsageRecord.objects.filter(user=user).aggregate(n=Sum("requests"))["n"] == 40
    assert fired() == {
        (subject, "requests_per_day", 80),
        (subject, "requests_per_day", 100),
        (subject, "tokens_per_day", 80),
    }
    assert Alert.objects.count() == 3
    assert sorted((c["alert"].limit, c["alert"].percent) for c in crossed.calls) == [
        ("requests_per_day", 80),
        ("requests_per_day", 100),
        ("tokens_per_day", 80),
    ]
    alert = Alert.objects.get(limit="requests_per_day", percent=100)
    assert (alert.used, alert.limit_value, alert.user) == (40, 40, user)


@pytest.mark.django_db(transaction=True)
def test_a_call_that_used_more_than_it_reserved_fires_the_crossing_it_made(
    real_redis, make_user
) -> None:
    user = make_user(tokens_per_day=250)  # 80%: 200 tokens, two calls of 100
    with quotas.reserve(user, messages=HELLO, max_tokens=50) as first:
        # Reserved when only the first was: its decision never sees the second's usage.
        with quotas.reserve(user, messages=HELLO, max_tokens=50) as second:
            assert first.reserved_tokens < 100
            second.settle(prompt_tokens=50, completion_tokens=50)
        assert fired() == set()  # 100 used and the first's reservation: under 80%
        first.settle(prompt_tokens=50, completion_tokens=50)  # 200: 80%
    assert fired() == {(f"u:{user.pk}", "tokens_per_day", 80)}


@pytest.mark.django_db(transaction=True)
def test_a_tier_rule_replaces_the_default_thresholds(real_redis, make_user) -> None:
    user = make_user(tokens_per_day=1_000)
    AlertRule.objects.create(tier=user.quota.tier, limit="tokens_per_day", percent=50)

    call(user, 200, 200)  # 40%
    assert fired() == set()
    call(user, 50, 50)  # 50%
    call(user, 200, 200)  # 90%: no 80% alert, the tier has rules of its own
    assert fired() == {(f"u:{user.pk}", "tokens_per_day", 50)}


@pytest.mark.django_db(transaction=True)
def test_a_team_alerts_on_its_shared_budget(real_redis, make_user) -> None:
    team = Team.objects.create(name="Research", slug="research", tokens_per_day=1_000)
    AlertRule.objects.create(team=team, percent=60)
    ada = make_user("ada", team=team)
    bob = make_user("bob", team=team)

    call(ada, 150, 150)
    call(bob, 150, 150)  # the team at 60%, neither user limited

    alert = Alert.objects.get()
    assert (alert.subject, alert.team, alert.user, alert.percent) == (
        f"t:{team.pk}",
        team,
        None,
        60,
    )


@pytest.mark.django_db(transaction=True)
def test_the_next_window_alerts_again(real_redis, make_user, monkeypatch) -> None:
    from quotas.services import service

    user = make_user(requests_per_day=1)
    monkeypatch.setattr(service, "clock", lambda: 1_800_000_000.0)
    call(user)
    monkeypatch.setattr(service, "clock", lambda: 1_800_000_000.0 + 86_400)
    call(user)

    assert sorted(Alert.objects.values_list("window", "percent")) == [
        ("20270115", 80),
        ("20270115", 100),
        ("20270116", 80),
        ("20270116", 100),
    ]


@pytest.mark.django_db(transaction=True)
def test_a_soft_tier_never_refuses_but_counts_and_alerts(real_redis, make_user, exceeded) -> None:
    user = make_user(requests_per_day=2, soft=True)

    for _ in range(4):
        with quotas.reserve(user, messages=HELLO, max_tokens=10) as metered:
            metered.settle(prompt_tokens=5, completion_tokens=5)
            headers = metered.headers()

    assert UsageRecord.objects.filter(user=user).aggregate(n=Sum("requests"))["n"] == 4
    assert headers["x-ratelimit-limit-requests"] == "2"
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert [(c["limit"], c["soft"], c["user_id"]) for c in exceeded.calls] == [
        ("requests_per_day", True, user.pk)
    ] * 2
    assert {(limit, p) for _, limit, p in fired()} == {
        ("requests_per_day", 80),
        ("requests_per_day", 100),
    }


@pytest.mark.django_db(transaction=True)
def test_a_hard_tier_refuses_and_says_so(real_redis, make_user, exceeded) -> None:
    user = make_user(requests_per_day=1)
    call(user)

    with pytest.raises(quotas.QuotaExceeded):
        call(user)

    assert [(c["limit"], c["soft"]) for c in exceeded.calls] == [("requests_per_day", False)]


@pytest.mark.django_db(transaction=True)
def test_an_async_call_alerts_too(real_redis, make_user) -> None:
    from asgiref.sync import async_to_sync

    user = make_user(tokens_per_day=100)

    async def one() -> None:
        async with quotas.areserve(user, messages=HELLO, max_tokens=50) as metered:
            await metered.settle(prompt_tokens=40, completion_tokens=45)

    async_to_sync(one)()

    assert {(limit, p) for _, limit, p in fired()} == {("tokens_per_day", 80)}
