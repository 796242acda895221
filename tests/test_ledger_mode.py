"""The chat endpoint while Redis is unreachable: budgets from the ledger, never a 500."""

from __future__ import annotations

import json
from zoneinfo import ZoneInfo

import pytest
from django.contrib.auth import get_user_model
from django.db.models import Sum
from django.utils import timezone
from rest_framework.test import APIClient

from quotas import engine_factory, ledger_mode
from quotas.conf import conf
from quotas.mock_provider import MockTransport
from quotas.models import AIModel, APIKey, Tier, UsageRecord, UserQuota
from quotas.policy import quota_for_user
from quotas.services import service
from quotas.tokens import count_prompt_tokens

pytestmark = pytest.mark.django_db

UNREACHABLE = "redis://127.0.0.1:1/0"
URL = "/v1/chat/completions"
HELLO = [{"role": "user", "content": "Hello there"}]
PROMPT = count_prompt_tokens(HELLO, "gpt-4o-mini")


@pytest.fixture(autouse=True)
def mock(mock_provider: MockTransport):
    yield mock_provider
    ledger_mode.take_dirty()  # no user left to re-seed in another test


@pytest.fixture
def client() -> APIClient:
    """A caller on a 1,000-token day, with an API key."""
    model = AIModel.objects.create(name="gpt-4o-mini")
    tier = Tier.objects.create(
        slug="small", name="Small", tokens_per_day=1000, max_concurrent_requests=1
    )
    tier.allowed_models.set([model])
    user = get_user_model().objects.create_user("ada")
    UserQuota.objects.create(user=user, tier=tier)
    _, key = APIKey.objects.create_key(user=user, name="test")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    client.user = user
    return client


def redis_at(settings, url: str | None, *, fail_open: bool = True) -> None:
    settings.QUOTAS = {**settings.QUOTAS, "REDIS_URL": url, "FAIL_OPEN": fail_open}
    engine_factory.reset_engines()


class Outage:
    def __init__(self, settings, redis_url: str | None) -> None:
        self.settings, self.redis_url = settings, redis_url

    def start(self, *, fail_open: bool = True) -> None:
        redis_at(self.settings, UNREACHABLE, fail_open=fail_open)

    def end(self) -> None:
        redis_at(self.settings, self.redis_url)


@pytest.fixture
def outage(settings, redis_url) -> Outage:
    return Outage(settings, redis_url)


@pytest.fixture
def redis_down(outage: Outage) -> None:
    outage.start()


def today():
    return timezone.localdate(timezone=ZoneInfo(conf.TIME_ZONE))


def spent(user) -> tuple[int, int]:
    """(requests, tokens) the ledger holds for the user today."""
    totals = UsageRecord.objects.filter(user=user, day=today()).aggregate(
        requests=Sum("requests"), prompt=Sum("prompt_tokens"), completion=Sum("completion_tokens")
    )
    return totals["requests"] or 0, (totals["prompt"] or 0) + (totals["completion"] or 0)


def chat(client: APIClient, **body):
    return client.post(URL, {"model": "gpt-4o-mini", "messages": HELLO, **body}, format="json")


@pytest.mark.parametrize(
    ("used", "max_tokens"),
    [
        pytest.param(1000, 5, id="at-the-budget"),
        pytest.param(900, 200, id="worst-case-does-not-fit"),
    ],
)
def test_fail_open_denies_from_the_ledger(client, mock, redis_down, used, max_tokens) -> None:
    UsageRecord.add(client.user.pk, today(), "gpt-4o-mini", requests=3, prompt_tokens=used)

    response = chat(client, max_tokens=max_tokens)

    assert response.status_code == 429
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("insufficient_quota", "insufficient_quota")
    assert "tokens_per_day" in error["message"]
    assert int(response["Retry-After"]) >= 1
    assert mock.calls == 0
    assert spent(client.user) == (3, used)
    assert UsageRecord.objects.get(user=client.user).denied == 1


def test_fail_open_serves_under_the_budget_and_books_the_real_usage(
    client, mock, redis_down
) -> None:
    UsageRecord.add(client.user.pk, today(), "gpt-4o-mini", requests=3, prompt_tokens=500)

    response = chat(client, max_tokens=200)

    assert response.status_code == 200, response.content
    usage = response.json()["usage"]
    assert usage["total_tokens"] < PROMPT + 200  # the mock answers short of max_tokens
    assert spent(client.user) == (4, 500 + usage["total_tokens"])
    assert response["x-ratelimit-limit-tokens"] == "1000"


def test_fail_open_stream_books_the_real_usage(client, mock, redis_down) -> None:
    response = chat(client, max_tokens=200, stream=True, stream_options={"include_usage": True})

    assert response.status_code == 200
    events = b"".join(response.streaming_content).decode().strip().split("\n\n")
    assert events[-1] == "data: [DONE]"
    usage = json.loads(events[-2].removeprefix("data: "))["usage"]
    assert usage["total_tokens"] < PROMPT + 200
    assert spent(client.user) == (1, usage["total_tokens"])


def test_fail_open_provider_failure_books_nothing(client, mock, redis_down) -> None:
    UsageRecord.add(client.user.pk, today(), "gpt-4o-mini", requests=3, prompt_tokens=500)
    mock.fail = "500"

    response = chat(client, max_tokens=200)

    assert response.status_code == 502
    assert spent(client.user) == (3, 500)


def test_fail_closed_answers_503(client, mock, outage) -> None:
    outage.start(fail_open=False)

    response = chat(client, max_tokens=20)

    assert response.status_code == 503
    assert response["Retry-After"] == "1"
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("server_error", "quota_unavailable")
    assert mock.calls == 0
    assert spent(client.user) == (0, 0)


@pytest.mark.parametrize("fail_open", [True, False])
@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("post", URL, {"messages": HELLO, "max_tokens": 20}),
        ("post", URL, {"messages": HELLO, "max_tokens": 20, "stream": True}),
        ("post", URL, {"messages": []}),
        ("get", "/v1/models", None),
        ("get", "/v1/quota", None),
        ("get", "/v1/nowhere", None),
    ],
)
def test_never_a_500(client, mock, outage, fail_open, method, path, body) -> None:
    outage.start(fail_open=fail_open)

    response = getattr(client, method)(path, body, format="json")

    assert response.status_code in {200, 400, 404, 503}
    if response.status_code == 503:
        assert response.json()["error"]["code"] == "quota_unavailable"
        if path == URL:
            assert response["Retry-After"] == "1"
    if response.status_code != 200:
        assert response.json()["error"]["message"]


def test_back_online_the_counters_hold_the_usage_of_the_outage(client, mock, outage) -> None:
    before = chat(client, max_tokens=500).json()["usage"]["total_tokens"]
    outage.start()
    mock.reply_tokens = 400
    during = chat(client, max_tokens=500).json()["usage"]["total_tokens"]
    assert spent(client.user) == (2, before + during)

    outage.end()

    report = client.get("/v1/quota").json()
    assert report["limits"]["tokens_per_day"]["used"] == before + during
    # Room for it in what Redis counted before the outage, none with the outage's usage.
    assert before + PROMPT + 700 <= 1000 < before + during + PROMPT + 700
    denied = chat(client, max_tokens=700)
    assert denied.status_code == 429
    assert denied.json()["error"]["code"] == "insufficient_quota"
    served = chat(client, max_tokens=20)
    assert served.status_code == 200
    assert client.get("/v1/quota").json()["limits"]["tokens_per_day"]["used"] == (
        before + during + served.json()["usage"]["total_tokens"]
    )


def test_back_online_a_reservation_another_server_made_meanwhile_stays_counted(
    client, mock, outage
) -> None:
    """One app server is back on Redis and has a call in flight when another, which also
    served the user from the ledger, sees Redis again: the in-flight reservation must not
    be forgotten, or the user could spend it twice."""
    quota = quota_for_user(client.user)
    outage.start()
    during = chat(client, max_tokens=100).json()["usage"]["total_tokens"]
    outage.end()

    _, grant = service.reserve(client.user.pk, quota, model="gpt-4o-mini", tokens=600, spend=0)
    assert grant is not None and not grant.degraded
    ledger_mode.mark_dirty(client.user.pk)  # the other server's record of the outage
    service.recover()

    assert service.usage(client.user.pk, quota).day_usage.tokens == during + 600
    assert chat(client, max_tokens=400).status_code == 429  # 600 are held in flight
    service.settle(grant, prompt_tokens=50, completion_tokens=150, cost=0)
    assert service.usage(client.user.pk, quota).day_usage.tokens == during + 200
    assert spent(client.user) == (2, during + 200)


def test_back_online_usage_reports_read_the_outages_usage(client, mock, outage) -> None:
    before = chat(client, max_tokens=20).json()["usage"]["total_tokens"]
    outage.start()
    during = chat(client, max_tokens=20).json()["usage"]["total_tokens"]
    outage.end()

    # What the admin's usage pages read, with no request in between to re-seed the counters.
    now = service.usage(client.user.pk, quota_for_user(client.user))

    assert now.day_usage.tokens == before + during
    assert now.day_usage.requests == 2


@pytest.mark.parametrize(
    ("used", "max_tokens"),
    [
        pytest.param(500, 600, id="denied-with-half-left"),
        pytest.param(850, 200, id="denied-running-low-the-fallback-denied-too"),
    ],
)
def test_fail_open_denial_with_a_fallback_model_is_counted_once(
    client, mock, redis_down, used, max_tokens
) -> None:
    fallback = AIModel.objects.create(name="gpt-4.1-mini")
    tier = Tier.objects.get(slug="small")
    tier.allowed_models.add(fallback)
    Tier.objects.filter(pk=tier.pk).update(fallback_model=fallback, degrade_at_percent=20)
    UsageRecord.add(client.user.pk, today(), "gpt-4o-mini", requests=3, prompt_tokens=used)

    response = chat(client, max_tokens=max_tokens)

    assert response.status_code == 429
    assert mock.calls == 0
    denied = UsageRecord.objects.filter(user=client.user).aggregate(n=Sum("denied"))["n"]
    assert denied == 1


def test_fail_open_running_low_serves_the_fallback_and_books_only_it(
    client, mock, redis_down
) -> None:
    fallback = AIModel.objects.create(name="gpt-4.1-mini")
    tier = Tier.objects.get(slug="small")
    tier.allowed_models.add(fallback)
    Tier.objects.filter(pk=tier.pk).update(fallback_model=fallback, degrade_at_percent=20)
    UsageRecord.add(client.user.pk, today(), "gpt-4o-mini", requests=3, prompt_tokens=850)

    response = chat(client, max_tokens=100)  # fits in the 150 left, which is under 20%

    assert response.status_code == 200, response.content
    assert response.json()["model"] == "gpt-4.1-mini"
    assert response["X-Quota-Downgraded-From"] == "gpt-4o-mini"
    usage = response.json()["usage"]
    assert spent(client.user) == (4, 850 + usage["total_tokens"])
    row = UsageRecord.objects.get(user=client.user, model="gpt-4.1-mini")
    assert (row.requests, row.prompt_tokens + row.completion_tokens) == (1, usage["total_tokens"])
