"""Teams and per-key limits: every level checked in one decision, from HTTP and Python."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db.models import Sum
from rest_framework.test import APIClient

import quotas
from quotas import engine_factory
from quotas.models import APIKey, LevelUsage, Team, Tier, UsageRecord, UserQuota

pytestmark = pytest.mark.django_db

HELLO = [{"role": "user", "content": "Hello"}]


def chat(client: APIClient, max_tokens: int = 50):
    body = {"model": "gpt-4o-mini", "messages": HELLO, "max_tokens": max_tokens}
    return client.post("/v1/chat/completions", body, format="json")


@pytest.fixture
def team() -> Team:
    tier = Tier.objects.create(slug="team-tier", name="Team", tokens_per_day=120)
    return Team.objects.create(name="Acme", slug="acme", tier=tier)


def join(caller, team: Team) -> None:
    UserQuota.objects.filter(user=caller.user).update(team=team)
    from quotas import policy

    policy.invalidate()


def spent(**filters) -> int:
    totals = UsageRecord.objects.filter(**filters).aggregate(
        p=Sum("prompt_tokens"), c=Sum("completion_tokens")
    )
    return (totals["p"] or 0) + (totals["c"] or 0)


def team_spent(team: Team) -> int:
    totals = LevelUsage.objects.filter(level=f"t:{team.pk}").aggregate(
        p=Sum("prompt_tokens"), c=Sum("completion_tokens")
    )
    return (totals["p"] or 0) + (totals["c"] or 0)


def test_members_share_the_teams_budget_and_a_refusal_charges_neither(make_caller, team, mock):
    ada, bob = make_caller("ada", tokens_per_day=10_000), make_caller("bob", tokens_per_day=10_000)
    join(ada, team)
    join(bob, team)

    served = 0
    for caller in (ada, bob) * 6:
        response = chat(caller.client(), max_tokens=40)
        if response.status_code == 200:
            served += 1
        else:
            assert response.status_code == 429
            error = response.json()["error"]
            assert error["code"] == "insufficient_quota"
            assert "team.tokens_per_day" in error["message"]

    assert 0 < served < 12
    assert team_spent(team) == spent(user__in=[ada.user, bob.user]) <= 120
    assert mock.calls == served


def test_a_members_own_lower_limit_still_binds(make_caller, team):
    ada = make_caller("ada", tokens_per_day=60)
    join(ada, team)

    assert chat(ada.client(), max_tokens=20).status_code == 200
    refused = chat(ada.client(), max_tokens=50)

    assert refused.status_code == 429
    assert "tokens_per_day" in refused.json()["error"]["message"]
    assert "team." not in refused.json()["error"]["message"]


def test_a_blocked_team_refuses_its_members(make_caller, team, mock):
    ada = make_caller("ada")
    join(ada, team)
    Team.objects.filter(pk=team.pk).update(blocked=True)
    from quotas import policy

    policy.invalidate()

    assert chat(ada.client()).status_code == 403
    assert mock.calls == 0


def test_the_quota_endpoint_shows_both_levels_and_the_nearest(make_caller, team):
    ada = make_caller("ada", tokens_per_day=10_000)
    join(ada, team)
    assert chat(ada.client(), max_tokens=30).status_code == 200

    report = ada.client().get("/v1/quota").json()

    team_day = report["team"]["limits"]["tokens_per_day"]
    assert report["team"]["slug"] == "acme"
    assert team_day["limit"] == 120
    assert team_day["used"] == report["limits"]["tokens_per_day"]["used"] > 0
    assert report["nearest"]["level"] == "team"
    assert report["nearest"]["limit"] == "tokens_per_day"


def test_a_key_with_a_lower_limit_than_its_owner(make_caller):
    ada = make_caller("ada", tokens_per_day=10_000)
    capped, secret = APIKey.objects.create_key(user=ada.user, name="ci", tokens_per_day=80)
    ci = APIClient()
    ci.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")

    assert chat(ci, max_tokens=30).status_code == 200
    refused = chat(ci, max_tokens=60)
    assert refused.status_code == 429
    assert "key.tokens_per_day" in refused.json()["error"]["message"]
    assert chat(ada.client(), max_tokens=60).status_code == 200  # the owner's other key

    report = ci.get("/v1/quota").json()
    assert report["key"]["limits"]["tokens_per_day"]["limit"] == 80
    assert LevelUsage.objects.filter(level=f"k:{capped.pk}").exists()


def test_a_key_may_not_exceed_its_owner(make_caller):
    ada = make_caller("ada", tokens_per_day=100)
    key = APIKey(user=ada.user, name="wide", tokens_per_day=500)

    with pytest.raises(ValidationError) as raised:
        key.clean()

    assert "tokens_per_day" in raised.value.message_dict


def test_the_python_api_takes_the_key_and_the_team(make_caller, team):
    ada = make_caller("ada", tokens_per_day=10_000)
    join(ada, team)
    capped, _ = APIKey.objects.create_key(user=ada.user, name="job", requests_per_day=1)

    with quotas.reserve(ada.user, key=capped, messages=HELLO, max_tokens=10) as call:
        call.settle(prompt_tokens=5, completion_tokens=5)
    with pytest.raises(quotas.QuotaExceeded) as refused:
        quotas.reserve(ada.user, key=capped, messages=HELLO, max_tokens=10)

    assert refused.value.limit == "key.requests_per_day"
    assert team_spent(team) == 10
    with pytest.raises(quotas.InvalidRequest):
        quotas.reserve(ada.user, key=object(), messages=HELLO)


def test_while_redis_is_down_the_team_budget_holds_from_the_ledger(make_caller, team, settings):
    ada, bob = make_caller("ada", tokens_per_day=10_000), make_caller("bob", tokens_per_day=10_000)
    join(ada, team)
    join(bob, team)
    settings.QUOTAS = {**settings.QUOTAS, "REDIS_URL": "redis://127.0.0.1:1/0", "FAIL_OPEN": True}
    engine_factory.reset_engines()
    try:
        statuses = [chat(c.client(), max_tokens=40).status_code for c in (ada, bob) * 6]
    finally:
        from quotas import ledger_mode

        ledger_mode.take_dirty()

    assert 200 in statuses and 429 in statuses
    assert team_spent(team) == spent(user__in=[ada.user, bob.user]) <= 120


def test_staff_create_a_team_add_members_and_issue_a_capped_key(make_caller, team):
    staff = get_user_model().objects.create_user("root", is_staff=True)
    client = APIClient()
    client.force_authenticate(staff)
    ada, bob = make_caller("ada", tokens_per_day=1_000), make_caller("bob")

    created = client.post(
        "/api/teams/", {"slug": "beta", "name": "Beta", "tier": "team-tier"}, format="json"
    )
    assert created.status_code == 201, created.content
    for caller in (ada, bob):
        moved = client.patch(f"/api/quotas/{caller.user.pk}/", {"team": "beta"}, format="json")
        assert moved.status_code == 200, moved.content
    too_wide = client.post(
        "/api/keys/",
        {"user": ada.user.pk, "name": "ci", "tokens_per_day": 5_000},
        format="json",
    )
    assert too_wide.status_code == 400
    assert "tokens_per_day" in too_wide.json()["error"]["message"]
    issued = client.post(
        "/api/keys/", {"user": ada.user.pk, "name": "ci", "tokens_per_day": 100}, format="json"
    )
    assert issued.status_code == 201, issued.content
    ci = APIClient()
    ci.credentials(HTTP_AUTHORIZATION=f"Bearer {issued.json()['key']}")
    assert chat(ci, max_tokens=20).status_code == 200

    shown = client.get("/api/teams/beta/").json()
    assert sorted(shown["members"]) == ["ada", "bob"]
    assert shown["usage"]["today"]["tokens"] > 0
    report = ci.get("/v1/quota").json()
    assert set(report) >= {"team", "key", "nearest"}


def test_after_an_outage_the_team_counters_hold_what_was_served_meanwhile(
    make_caller, team, settings, redis_url
):
    ada = make_caller("ada", tokens_per_day=10_000)
    join(ada, team)
    assert chat(ada.client(), max_tokens=10).status_code == 200

    def redis_at(url):
        settings.QUOTAS = {**settings.QUOTAS, "REDIS_URL": url, "FAIL_OPEN": True}
        engine_factory.reset_engines()

    redis_at("redis://127.0.0.1:1/0")
    assert chat(ada.client(), max_tokens=10).status_code == 200  # from the ledger
    redis_at(redis_url)

    report = ada.client().get("/v1/quota").json()
    assert report["team"]["limits"]["tokens_per_day"]["used"] == team_spent(team)
    assert report["limits"]["tokens_per_day"]["used"] == spent(user=ada.user)


def test_a_team_rate_is_shown_per_minute_and_stays_retryable(make_caller):
    tier = Tier.objects.create(slug="team-rate", name="Team rate", requests_per_minute=10, burst=1)
    ada = make_caller("ada")
    join(ada, Team.objects.create(name="Rated", slug="rated", tier=tier))

    served = chat(ada.client(), max_tokens=5)
    refused = chat(ada.client(), max_tokens=5)

    assert '"team.requests_per_minute";q=10;w=60' in served["RateLimit-Policy"]
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["code"] == "rate_limit_exceeded"
    assert "team.requests_per_minute (10 requests per minute, 1 at once)" in error["message"]
    assert "x-should-retry" not in refused
    assert int(refused["retry-after-ms"]) > 0


def test_a_team_budget_refusal_is_not_retried(make_caller, team):
    ada = make_caller("ada", tokens_per_day=10_000)
    join(ada, team)

    refused = chat(ada.client(), max_tokens=500)  # more than the team's 120 a day

    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "insufficient_quota"
    assert refused["x-should-retry"] == "false"
