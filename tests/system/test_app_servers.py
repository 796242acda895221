"""Two gunicorn app servers sharing one Redis keep every limit exact."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from django.db.models import Sum

from quotas.models import UsageRecord

from .http import call

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def _hammer(calls: list[tuple[str, dict[str, Any]]], threads: int) -> list[int]:
    barrier = threading.Barrier(threads)

    def worker(chunk: list[tuple[str, dict[str, Any]]]) -> list[int]:
        barrier.wait()
        return [call(url, **kwargs)[0] for url, kwargs in chunk]

    chunks = [calls[i::threads] for i in range(threads)]
    with ThreadPoolExecutor(threads) as pool:
        return [s for part in pool.map(worker, chunks) for s in part]


def test_request_limit_is_exact_across_two_servers(real_redis, app_servers, tier_user):
    _, key = tier_user(requests_per_minute=1, burst=50)
    servers = app_servers(real_redis, count=2)
    headers = {"Authorization": f"Bearer {key}"}
    body = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 5,
    }
    # 32 concurrent clients x 10 attempts, alternating between the two servers.
    calls = [
        (f"{servers[i % 2]}/v1/chat/completions", {"json": body, "headers": headers})
        for i in range(320)
    ]
    statuses = _hammer(calls, threads=32)
    print(f"\n320 attempts over 2 app servers: {statuses.count(200)} admitted")
    assert statuses.count(200) == 50
    assert statuses.count(429) == 270


def test_token_budget_holds_across_two_servers(real_redis, app_servers, tier_user):
    user, key = tier_user(tokens_per_day=2000, requests_per_minute=10_000, burst=10_000)
    servers = app_servers(real_redis, count=2)
    body = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "Count the budget down."}],
        "max_tokens": 60,
    }
    headers = {"Authorization": f"Bearer {key}"}
    calls = [
        (f"{servers[i % 2]}/v1/chat/completions", {"json": body, "headers": headers})
        for i in range(80)
    ]
    statuses = _hammer(calls, threads=40)
    totals = UsageRecord.objects.filter(user=user).aggregate(
        requests=Sum("requests"), prompt=Sum("prompt_tokens"), completion=Sum("completion_tokens")
    )
    spent = (totals["prompt"] or 0) + (totals["completion"] or 0)
    print(f"\n80 requests by 40 clients: {statuses.count(200)} served, {spent} tokens settled")
    assert 500 not in statuses
    assert statuses.count(429) > 0
    assert spent <= 2000
    assert totals["requests"] == statuses.count(200)


def test_a_team_budget_holds_across_four_servers(real_redis, app_servers, tier_user):
    from quotas.models import LevelUsage, Team, Tier, UserQuota

    team_tier = Tier.objects.create(slug="team-budget", name="Team", tokens_per_day=3000)
    team = Team.objects.create(name="Acme", slug="acme", tier=team_tier)
    members = [
        tier_user(tokens_per_day=limit, requests_per_minute=10_000, burst=10_000)
        for limit in (2_500, 800)
    ]
    UserQuota.objects.filter(user__in=[user for user, _ in members]).update(team=team)
    servers = app_servers(real_redis, count=4)
    body = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "Share the team's budget."}],
        "max_tokens": 60,
    }
    calls = [
        (
            f"{servers[i % 4]}/v1/chat/completions",
            {"json": body, "headers": {"Authorization": f"Bearer {members[i % 2][1]}"}},
        )
        for i in range(240)
    ]
    statuses = _hammer(calls, threads=32)

    def settled(rows: Any) -> int:
        totals = rows.aggregate(p=Sum("prompt_tokens"), c=Sum("completion_tokens"))
        return (totals["p"] or 0) + (totals["c"] or 0)

    team_total = settled(LevelUsage.objects.filter(level=f"t:{team.pk}"))
    own = [settled(UsageRecord.objects.filter(user=user)) for user, _ in members]
    print(f"\n240 requests over 4 servers: team {team_total} of 3000, members {own}")
    assert 500 not in statuses
    assert statuses.count(429) > 0
    assert team_total == sum(own) <= 3000
    assert own[1] <= 800  # the member's own lower limit still binds
