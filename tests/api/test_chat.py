"""POST /v1/chat/completions and GET /v1/models, through the official openai SDK and
Django's test client: answers, budgets under concurrency, degradation, provider faults."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import openai
import pytest
from django.db import connection
from django.utils import timezone

from quotas.conf import conf
from quotas.models import UsageRecord
from quotas.services import service
from quotas.tokens import count_prompt_tokens

from .conftest import ledger, settled_ledger

URL = "/v1/chat/completions"
HELLO = [{"role": "user", "content": "Hello there"}]
live = pytest.mark.django_db(transaction=True)


def today():
    return timezone.localdate(timezone=ZoneInfo(conf.TIME_ZONE))


def post(client, **body):
    return client.post(URL, {"messages": HELLO, **body}, format="json")


# the openai SDK against the live server ---------------------------------------------------


@live
def test_sdk_completion(make_caller, sdk, mock) -> None:
    caller = make_caller(tokens_per_day=10_000)

    raw = sdk(caller).chat.completions.with_raw_response.create(
        model="gpt-4o", messages=HELLO, max_tokens=12
    )
    reply = raw.parse()

    assert raw.http_response.status_code == 200
    assert reply.model == "gpt-4o"
    assert reply.object == "chat.completion"
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content.startswith("[mock] Reply to: Hello there")
    assert reply.choices[0].finish_reason == "length"
    usage = reply.usage
    assert usage.prompt_tokens == count_prompt_tokens(HELLO, "gpt-4o")
    assert usage.completion_tokens == 12
    assert usage.total_tokens == usage.prompt_tokens + 12
    assert mock.calls == 1
    assert settled_ledger(caller.user, 1, model="gpt-4o") == {
        "requests": 1,
        "prompt": usage.prompt_tokens,
        "completion": 12,
        "denied": 0,
    }
    assert raw.headers["x-ratelimit-limit-tokens"] == "10000"
    assert "RateLimit-Policy" in raw.headers


@live
def test_sdk_models_list_is_the_tiers_allowed_models(make_caller, sdk, mock) -> None:
    caller = make_caller(allowed=("gpt-4o-mini", "gpt-4.1-mini"))

    models = sdk(caller).models.list()

    assert [m.id for m in models] == ["gpt-4.1-mini", "gpt-4o-mini"]
    assert {m.object for m in models} == {"model"}
    assert mock.calls == 0  # the list is the tier's, not the provider's


@live
def test_sdk_rate_limit_error_when_the_burst_is_used_up(make_caller, sdk, mock) -> None:
    caller = make_caller(requests_per_minute=1, burst=2)
    client = sdk(caller)
    for _ in range(2):
        client.chat.completions.create(model="gpt-4o-mini", messages=HELLO, max_tokens=5)

    with pytest.raises(openai.RateLimitError) as denied:
        client.chat.completions.create(model="gpt-4o-mini", messages=HELLO, max_tokens=5)

    error = denied.value
    assert error.status_code == 429
    assert error.code == "rate_limit_exceeded"
    assert error.type == "requests"
    assert "requests_per_minute" in error.message
    retry_after = int(error.response.headers["retry-after"])
    assert 1 <= retry_after <= 60
    assert mock.calls == 2
    book = settled_ledger(caller.user, 2)
    assert (book["requests"], book["denied"]) == (2, 1)


@live
def test_sdk_insufficient_quota_when_the_day_budget_is_used_up(make_caller, sdk, mock) -> None:
    caller = make_caller(tokens_per_day=500)
    UsageRecord.add(caller.user.pk, today(), "gpt-4o-mini", requests=9, prompt_tokens=480)

    with pytest.raises(openai.RateLimitError) as denied:
        sdk(caller).chat.completions.create(model="gpt-4o-mini", messages=HELLO, max_tokens=30)

    error = denied.value
    assert error.code == "insufficient_quota"
    assert error.type == "insufficient_quota"
    assert "tokens_per_day" in error.message
    retry_after = int(error.response.headers["retry-after"])
    assert 1 <= retry_after <= 86_400  # the next midnight
    assert mock.calls == 0


@pytest.fixture
def retrying_sdk(settled_server):
    """The official SDK as most callers run it: it retries what it deems retryable."""
    clients: list[openai.OpenAI] = []

    def make(caller) -> openai.OpenAI:
        client = openai.OpenAI(
            base_url=f"{settled_server.url}/v1", api_key=caller.key, max_retries=2, timeout=20
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@live
def test_sdk_does_not_retry_a_budget_429(make_caller, retrying_sdk, mock) -> None:
    caller = make_caller(tokens_per_day=500)
    UsageRecord.add(caller.user.pk, today(), "gpt-4o-mini", requests=9, prompt_tokens=480)

    with pytest.raises(openai.RateLimitError) as denied:
        retrying_sdk(caller).chat.completions.create(
            model="gpt-4o-mini", messages=HELLO, max_tokens=30
        )

    assert ledger(caller.user)["denied"] == 1  # one request reached the server
    error = denied.value
    assert error.code == "insufficient_quota"
    assert error.response.headers["x-should-retry"] == "false"
    assert "20 tokens left" in error.message
    assert f"It resets at 00:00 {conf.TIME_ZONE}, in " in error.message


@live
def test_sdk_retries_a_rate_429_and_gets_through(make_caller, retrying_sdk, mock) -> None:
    caller = make_caller(requests_per_minute=30, burst=1)  # one every 2 s
    client = retrying_sdk(caller)
    client.chat.completions.create(model="gpt-4o-mini", messages=HELLO, max_tokens=5)

    reply = client.chat.completions.create(model="gpt-4o-mini", messages=HELLO, max_tokens=5)

    assert reply.choices[0].message.content
    book = settled_ledger(caller.user, 2)
    assert book["requests"] == 2
    assert book["denied"] >= 1  # refused first, then retried by the SDK
    assert mock.calls == 2


# a day budget under concurrency ------------------------------------------------------------


@live
def test_concurrent_requests_never_overspend_the_day_budget(make_caller, sdk, mock) -> None:
    if connection.vendor == "sqlite":
        pytest.skip(
            "the live server's threads share SQLite's one in-memory test connection, "
            "which cannot hold concurrent transactions"
        )
    caller = make_caller(tokens_per_day=2000)
    mock.latency = 0.5  # every request is still in flight when the last one starts
    mock.reply_tokens = 60  # each answer uses ~70 tokens: 40 of them would need ~2,800
    client = sdk(caller)
    start = threading.Barrier(40)

    def ask(i: int) -> int | openai.RateLimitError:
        messages = [{"role": "user", "content": f"Question number {i}"}]
        start.wait(timeout=10)
        time.sleep(i * 0.01)  # the test server's listen backlog is only 10 connections
        try:
            reply = client.chat.completions.create(
                model="gpt-4o-mini", messages=messages, max_tokens=100
            )
        except openai.RateLimitError as exc:
            return exc
        return reply.usage.total_tokens

    with ThreadPoolExecutor(40) as pool:
        results = list(pool.map(ask, range(40)))

    served = [r for r in results if isinstance(r, int)]
    denied = [r for r in results if isinstance(r, openai.RateLimitError)]
    assert len(served) + len(denied) == 40
    assert served and denied
    assert {e.code for e in denied} == {"insufficient_quota"}
    assert all(int(e.response.headers["retry-after"]) >= 1 for e in denied)
    assert mock.calls == len(served)

    spent = sum(served)
    assert spent <= 2000
    book = settled_ledger(caller.user, len(served))
    assert book["prompt"] + book["completion"] == spent
    assert (book["requests"], book["denied"]) == (len(served), len(denied))

    report = caller.client().get("/v1/quota").json()
    # What the provider reported, not the reservations (prompt + max_tokens of 100 each).
    prompt = count_prompt_tokens([{"role": "user", "content": "Question number 10"}], "gpt-4o")
    assert spent < len(served) * (prompt + 100)
    assert report["usage"]["today"]["tokens"] == spent
    assert report["limits"]["tokens_per_day"]["used"] == spent
    assert report["limits"]["tokens_per_day"]["remaining"] == 2000 - spent


# defaults ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_503_provider_not_configured_without_a_key_with_debug_off(
    make_caller, monkeypatch, settings
) -> None:
    from quotas import upstream

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    settings.DEBUG = False
    settings.QUOTAS = {**settings.QUOTAS, "PROVIDER": "openai"}
    upstream.reset_client()
    caller = make_caller()

    response = post(caller.client())
    streamed = post(caller.client(), stream=True)

    upstream.reset_client()
    for answer in (response, streamed):
        assert answer.status_code == 503
        assert answer.json()["error"]["code"] == "provider_not_configured"
        assert "OPENAI_API_KEY" in answer.json()["error"]["message"]
    assert not UsageRecord.objects.exists()


@pytest.mark.django_db
def test_model_and_max_tokens_default_to_the_tiers(make_caller, mock) -> None:
    caller = make_caller(default="gpt-4o", max_tokens_per_request=300)

    response = post(caller.client())

    assert response.status_code == 200
    assert response.json()["model"] == "gpt-4o"
    assert mock.last_request["model"] == "gpt-4o"
    assert mock.last_request["max_tokens"] == 300  # DEFAULT_MAX_TOKENS, capped by the tier


@pytest.mark.django_db
def test_the_end_user_field_is_forwarded(make_caller, mock) -> None:
    """OpenAI's `user` (the caller's own end-user id) is a request parameter like any other."""
    caller = make_caller()

    response = post(caller.client(), user="end-user-42")

    assert response.status_code == 200
    assert mock.last_request["user"] == "end-user-42"
    assert ledger(caller.user)["requests"] == 1


@pytest.mark.django_db
def test_max_completion_tokens_is_honoured(make_caller, mock) -> None:
    caller = make_caller()

    response = post(caller.client(), max_completion_tokens=6)

    assert response.status_code == 200
    assert response.json()["usage"]["completion_tokens"] <= 6
    assert mock.last_request["max_completion_tokens"] == 6


# degradation to the fallback model ---------------------------------------------------------

NOON = datetime(2026, 3, 10, 12, 0, tzinfo=UTC).timestamp()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch):
    """Moves the quota service's clock: clock.now = seconds since the epoch."""

    class Clock:
        now = NOON

        def __call__(self) -> float:
            return self.now

    fake = Clock()
    monkeypatch.setattr(service, "clock", fake)  # and back to Redis's clock afterwards
    return fake


@pytest.mark.django_db
def test_degrades_to_the_fallback_model_at_the_threshold_and_back_next_day(
    make_caller, mock, clock, settings
) -> None:
    settings.TIME_ZONE = "UTC"
    caller = make_caller(
        default="gpt-4o", fallback="gpt-4o-mini", tokens_per_day=1000, degrade_at_percent=50
    )
    day = datetime.fromtimestamp(NOON, UTC).date()
    UsageRecord.add(caller.user.pk, day, "gpt-4o", requests=5, prompt_tokens=400)
    client = caller.client()
    used = 400
    served = []
    for _ in range(10):
        response = post(client, model="gpt-4o", max_tokens=40)
        assert response.status_code == 200
        reply = response.json()
        # Less than 50% of the day's 1,000 tokens left when asked: the fallback serves.
        low = used > 500
        served.append(reply["model"])
        if low:
            assert reply["model"] == "gpt-4o-mini"
            assert response["X-Quota-Downgraded-From"] == "gpt-4o"
            assert mock.last_request["model"] == "gpt-4o-mini"
            break
        assert reply["model"] == "gpt-4o"
        assert "X-Quota-Downgraded-From" not in response
        used += reply["usage"]["total_tokens"]
    assert served[0] == "gpt-4o" and served[-1] == "gpt-4o-mini"
    # The fallback's usage is booked under the fallback.
    assert ledger(caller.user, model="gpt-4o-mini", day=day)["requests"] == 1

    # Asking for the fallback itself is no downgrade.
    response = post(client, model="gpt-4o-mini", max_tokens=5)
    assert response.json()["model"] == "gpt-4o-mini"
    assert "X-Quota-Downgraded-From" not in response

    clock.now = NOON + 86_400
    response = post(client, model="gpt-4o", max_tokens=5)

    assert response.status_code == 200
    assert response.json()["model"] == "gpt-4o"
    assert "X-Quota-Downgraded-From" not in response
    assert ledger(caller.user, day=day + timedelta(days=1))["requests"] == 1


@pytest.mark.django_db
def test_no_degradation_without_a_fallback_model(make_caller, mock, clock) -> None:
    caller = make_caller(default="gpt-4o", tokens_per_day=1000, degrade_at_percent=50)
    day = datetime.fromtimestamp(NOON, UTC).date()
    UsageRecord.add(caller.user.pk, day, "gpt-4o", requests=5, prompt_tokens=900)

    response = post(caller.client(), model="gpt-4o", max_tokens=5)

    assert response.json()["model"] == "gpt-4o"
    assert "X-Quota-Downgraded-From" not in response


@pytest.mark.django_db
def test_denied_for_the_requested_model_but_the_fallback_fits(make_caller, mock) -> None:
    caller = make_caller(
        default="gpt-4o",
        fallback="gpt-4o-mini",
        spend_per_month=Decimal("0.01"),
        degrade_at_percent=50,
    )
    UsageRecord.add(caller.user.pk, today(), "gpt-4o", requests=5, cost=Decimal("0.006"))

    # Up to 500 tokens of gpt-4o cost $0.005: more than the $0.004 left, and under half left.
    response = post(caller.client(), model="gpt-4o", max_tokens=500)

    assert response.status_code == 200
    assert response.json()["model"] == "gpt-4o-mini"
    assert response["X-Quota-Downgraded-From"] == "gpt-4o"
    assert ledger(caller.user, model="gpt-4o-mini")["requests"] == 1
    assert ledger(caller.user)["denied"] == 0


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("used", "max_tokens"),
    [
        pytest.param(500, 600, id="denied-with-half-left"),
        pytest.param(850, 200, id="denied-running-low-the-fallback-denied-too"),
    ],
)
def test_denial_with_a_fallback_model_is_counted_once(make_caller, mock, used, max_tokens) -> None:
    caller = make_caller(
        default="gpt-4o", fallback="gpt-4o-mini", tokens_per_day=1000, degrade_at_percent=20
    )
    UsageRecord.add(caller.user.pk, today(), "gpt-4o", requests=3, prompt_tokens=used)

    response = post(caller.client(), model="gpt-4o", max_tokens=max_tokens)

    assert response.status_code == 429
    assert response.json()["error"]["code"] == "insufficient_quota"
    assert mock.calls == 0
    assert ledger(caller.user)["denied"] == 1


# provider faults ------------------------------------------------------------------------------

FAULTS = [
    pytest.param("timeout", False, 504, "timeout", id="timeout"),
    pytest.param("500", False, 502, "upstream_error", id="500"),
    pytest.param("malformed", False, 502, "upstream_error", id="malformed"),
    pytest.param("cut", False, 502, "upstream_error", id="cut-body"),
    pytest.param("timeout", True, 504, "timeout", id="stream-timeout"),
    pytest.param("500", True, 502, "upstream_error", id="stream-500"),
    pytest.param("malformed", True, 502, "upstream_error", id="stream-malformed"),
]


@pytest.mark.django_db
@pytest.mark.parametrize(("fault", "stream", "status", "code"), FAULTS)
def test_provider_fault_refunds_and_releases_the_lease(
    make_caller, mock, fault, stream, status, code
) -> None:
    caller = make_caller(max_concurrent_requests=1, requests_per_day=2, tokens_per_day=1000)
    client = caller.client()
    mock.fail = fault

    response = post(client, max_tokens=20, stream=stream)

    assert response.status_code == status
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("server_error", code)
    assert mock.calls == 1
    assert ledger(caller.user) == {"requests": 0, "prompt": 0, "completion": 0, "denied": 0}
    report = client.get("/v1/quota").json()
    assert report["limits"]["tokens_per_day"]["used"] == 0
    assert report["limits"]["max_concurrent_requests"]["used"] == 0

    mock.fail = ""
    again = post(client, max_tokens=20)  # the lease is free and nothing was charged
    assert again.status_code == 200
    assert ledger(caller.user)["requests"] == 1


@pytest.mark.django_db
def test_provider_429_is_a_503_and_later_requests_back_off(make_caller, mock, settings) -> None:
    caller = make_caller(max_concurrent_requests=1)
    client = caller.client()
    mock.fail = "429"

    response = post(client, max_tokens=5)

    assert response.status_code == 503
    assert response["Retry-After"] == "1"
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("server_error", "upstream_rate_limited")
    assert "gpt-4o-mini" in error["message"]
    assert mock.calls == 1
    mock.fail = ""

    # Within the provider's Retry-After, a caller that may not wait is not sent upstream.
    settings.QUOTAS = {**settings.QUOTAS, "UPSTREAM_MAX_WAIT": 0}
    busy = post(client, max_tokens=5)
    assert busy.status_code == 503
    assert busy.json()["error"]["code"] == "upstream_busy"
    assert int(busy["Retry-After"]) >= 1
    assert mock.calls == 1

    # One that may wait is sent once the backoff is over.
    settings.QUOTAS = {**settings.QUOTAS, "UPSTREAM_MAX_WAIT": 5}
    started = time.monotonic()
    served = post(client, max_tokens=5)
    assert served.status_code == 200
    assert time.monotonic() - started > 0.2
    assert mock.calls == 2
    assert ledger(caller.user)["requests"] == 1
