from __future__ import annotations

import re
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from rest_framework.test import APIClient

from quotas.models import APIKey, UserQuota
from quotas.policy import quota_for_user
from quotas.services import service

pytestmark = pytest.mark.django_db

URL = "/v1/quota"


@pytest.fixture
def demo():
    """The demo user on the free tier (burst 5, 20 000 tokens a day, $1 a month)."""
    call_command("seed_demo", "--force", stdout=StringIO())
    return get_user_model().objects.get(username="demo")


@pytest.fixture
def client(demo):
    _, key = APIKey.objects.create_key(user=demo, name="test")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


def test_401_without_a_key(demo):
    response = APIClient().get(URL)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


def test_session_login_works_too(demo):
    client = APIClient()
    client.force_login(demo)
    assert client.get(URL).json()["tier"]["slug"] == "free"


def test_shape(client):
    body = client.get(URL).json()
    assert body["object"] == "quota"
    assert body["tier"] == {"slug": "free", "name": "Free"}
    assert body["blocked"] is False
    assert body["time_zone"] == "UTC"
    limits = body["limits"]
    assert set(limits) == {
        "requests_per_minute",
        "requests_per_day",
        "tokens_per_day",
        "tokens_per_month",
        "spend_per_month",
        "max_concurrent_requests",
        "max_tokens_per_request",
    }
    for name in ("requests_per_minute", "requests_per_day", "tokens_per_day", "spend_per_month"):
        assert {"limit", "used", "remaining", "reset_seconds", "resets_at"} <= set(limits[name])
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", limits[name]["resets_at"])
    # The free tier's rate as set: 10 a minute, 5 at once.
    rate = limits["requests_per_minute"]
    assert (rate["limit"], rate["per_minute"], rate["burst"]) == (10, 10, 5)
    assert limits["tokens_per_day"]["limit"] == 20_000
    assert limits["spend_per_month"]["limit"] == "1.000000"
    assert limits["spend_per_month"]["currency"] == "USD"
    assert limits["max_concurrent_requests"] == {"limit": 2, "used": 0, "remaining": 2}
    assert limits["max_tokens_per_request"] == {"limit": 512}
    assert set(body["usage"]) == {"today", "this_month"}
    assert set(body["usage"]["today"]) == {
        "period",
        "requests",
        "tokens",
        "spend",
        "cached_tokens",
        "reasoning_tokens",
    }
    assert re.fullmatch(r"\d{8}", body["usage"]["today"]["period"])
    assert re.fullmatch(r"\d{6}", body["usage"]["this_month"]["period"])
    assert body["models"] == {
        "allowed": ["gpt-4.1-nano", "gpt-4o-mini", "text-embedding-3-small"],
        "default": "gpt-4o-mini",
        "fallback": "gpt-4.1-nano",
        "degrade_at_percent": 20,
    }


def test_figures_follow_reserve_and_settle(client, demo):
    quota = quota_for_user(demo)
    _, grant = service.reserve(demo.pk, quota, model="gpt-4o-mini", tokens=800, spend=400)
    body = client.get(URL).json()
    assert body["limits"]["tokens_per_day"]["used"] == 800
    assert body["limits"]["tokens_per_day"]["remaining"] == 19_200
    assert body["limits"]["max_concurrent_requests"]["used"] == 1
    assert body["usage"]["today"]["tokens"] == 800

    service.settle(grant, prompt_tokens=120, completion_tokens=80, cost=150)
    body = client.get(URL).json()
    limits, today = body["limits"], body["usage"]["today"]
    assert limits["tokens_per_day"]["used"] == 200
    assert limits["tokens_per_day"]["remaining"] == 19_800
    assert limits["tokens_per_month"]["used"] == 200
    assert limits["spend_per_month"]["used"] == "0.000150"
    assert limits["spend_per_month"]["remaining"] == "0.999850"
    assert limits["max_concurrent_requests"]["used"] == 0
    assert today["tokens"] == 200
    assert today["spend"] == "0.000150"
    assert body["usage"]["this_month"]["tokens"] == 200
    # The AI call is the day's only request: reading the quota costs none.
    assert today["requests"] == 1
    assert limits["requests_per_day"]["used"] == 1


def test_reading_the_quota_and_the_models_costs_no_request_budget(client):
    """Far more reads than the free tier's burst of 5 and its 200 requests a day."""
    paths = (URL, "/v1/models", "/v1/models/gpt-4o-mini")
    responses = [client.get(path) for _ in range(6) for path in paths]

    assert [r.status_code for r in responses] == [200] * 18
    limits = client.get(URL).json()["limits"]
    assert limits["requests_per_minute"]["remaining"] == 5
    assert limits["requests_per_day"]["used"] == 0


def test_headers_report_the_rate_per_minute_and_spend_in_usd(client):
    for response in (
        client.get(URL),
        client.get("/v1/models"),
        client.get("/v1/models/gpt-4o-mini"),
    ):
        assert '"requests_per_minute";q=10;w=60' in response["RateLimit-Policy"]
        assert '"spend_per_month";q=1.0;w=2592000' in response["RateLimit-Policy"]
        assert response["RateLimit"].startswith('"requests_per_minute";r=5;')
        assert response["x-ratelimit-limit-requests"] == "10"
        assert response["x-ratelimit-remaining-requests"] == "5"
        assert "x-ratelimit-reset-requests" in response
        assert response["x-ratelimit-limit-tokens"] == "20000"
        assert response["x-ratelimit-remaining-tokens"] == "20000"
        assert re.fullmatch(r"(\d+h)?\d+m\d+s", response["x-ratelimit-reset-tokens"])
        assert '"tokens_per_day";q=20000;w=86400' in response["RateLimit-Policy"]
        assert response["x-ratelimit-limit-spend"] == "1.000000"
        assert response["x-ratelimit-remaining-spend"] == "1.000000"
        assert "Retry-After" not in response


def test_a_blocked_account_is_refused(client, demo):
    UserQuota.objects.filter(user=demo).update(blocked=True)
    for path in (URL, "/v1/models"):
        response = client.get(path)
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "blocked"


def test_redis_down_answers_503(client, settings):
    from quotas.engine_factory import reset_engines

    settings.QUOTAS = {**settings.QUOTAS, "REDIS_URL": "redis://127.0.0.1:1/0", "FAIL_OPEN": True}
    reset_engines()
    response = client.get(URL)
    assert response.status_code == 503
    assert response["Retry-After"] == "1"
    assert response.json()["error"]["code"] == "quota_unavailable"


@pytest.mark.parametrize("path", ["/v1/responses/", "/v1/files", "/v1/chat/completions/"])
def test_a_post_to_an_unknown_path_is_a_json_404_not_a_csrf_page(demo, path):
    """Session and CSRF checks on, as for a browser or an SDK whose request has a cookie."""
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(demo)

    response = client.post(path, {"input": "hi"}, format="json")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "unknown_url"
