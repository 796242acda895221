from __future__ import annotations

import email.utils
import time
from typing import Any

import pytest

from quotas import upstream
from quotas.engine import QuotaEngine
from quotas.mock_provider import FINGERPRINT, MockTransport
from quotas.models import AIModel
from quotas.upstream import (
    UpstreamBusy,
    UpstreamError,
    UpstreamLimiter,
    UpstreamRateLimited,
    UpstreamTimeout,
    chat,
    chat_stream,
)

PARAMS: dict[str, Any] = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": "Say hello to the quota team"}],
    "max_tokens": 8,
}


class Sleeps(list[float]):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture(autouse=True)
def mock(mock_provider: MockTransport) -> MockTransport:
    mock_provider.sleep = Sleeps()
    return mock_provider


# the client -----------------------------------------------------------------------------


def test_without_api_key_the_mock_answers(mock: MockTransport) -> None:
    answer = chat(PARAMS)

    assert answer["system_fingerprint"] == FINGERPRINT
    assert answer["choices"][0]["message"]["content"].startswith("[mock]")
    assert answer["usage"]["completion_tokens"] == 8
    assert mock.calls == 1
    assert upstream.client() is upstream.client()


def test_with_api_key_the_sdk_reads_the_environment(
    monkeypatch: pytest.MonkeyPatch, settings
) -> None:
    settings.QUOTAS = {**settings.QUOTAS, "PROVIDER": "openai"}
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://provider.invalid/v1")
    upstream.reset_client()

    client = upstream.client()

    assert client.api_key == "sk-test"
    assert str(client.base_url) == "http://provider.invalid/v1/"
    assert client.max_retries == 0


def test_without_a_key_the_mock_serves_only_in_debug_or_when_chosen(
    monkeypatch: pytest.MonkeyPatch, settings
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    settings.QUOTAS = {**settings.QUOTAS, "PROVIDER": "openai"}
    settings.DEBUG = False
    upstream.reset_client()
    with pytest.raises(upstream.UpstreamNotConfigured) as refused:
        chat(PARAMS)
    assert refused.value.status == 503

    settings.DEBUG = True
    upstream.reset_client()
    assert chat(PARAMS)["choices"][0]["message"]["content"].startswith("[mock]")

    settings.DEBUG = False
    settings.QUOTAS = {**settings.QUOTAS, "PROVIDER": "mock"}
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    upstream.reset_client()
    assert chat(PARAMS)["choices"][0]["message"]["content"].startswith("[mock]")


def test_parameters_pass_through(mock: MockTransport) -> None:
    chat({**PARAMS, "temperature": 0.2, "top_k": 5, "stream": True, "timeout": 3})

    assert mock.last_request is not None
    sent = mock.last_request
    assert sent["temperature"] == 0.2
    assert sent["top_k"] == 5
    assert sent["timeout"] == 3  # a body field like any other, not the SDK's timeout
    assert "stream" not in sent


def test_stream_always_asks_for_usage(mock: MockTransport) -> None:
    chunks = list(chat_stream({**PARAMS, "stream_options": {"include_usage": False}}))

    assert mock.last_request is not None
    assert mock.last_request["stream_options"] == {"include_usage": True}
    assert all(isinstance(chunk, dict) for chunk in chunks)
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == chat(PARAMS)["usage"]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks[:-1])
    assert text == chat(PARAMS)["choices"][0]["message"]["content"]


@pytest.mark.parametrize(
    ("fault", "error", "status"),
    [
        ("timeout", UpstreamTimeout, 504),
        ("500", UpstreamError, 500),
        ("429", UpstreamRateLimited, 429),
        ("malformed", UpstreamError, 502),
        ("cut", UpstreamError, 502),
    ],
)
def test_faults_map_to_our_errors(
    mock: MockTransport, fault: str, error: type[UpstreamError], status: int
) -> None:
    mock.fail = fault
    with pytest.raises(error) as raised:
        chat(PARAMS)
    assert type(raised.value) is error
    assert raised.value.status == status


def test_provider_rate_limit_carries_retry_after(mock: MockTransport) -> None:
    mock.fail = "429"
    mock.retry_after = 7
    with pytest.raises(UpstreamRateLimited) as raised:
        chat(PARAMS)
    assert raised.value.retry_after == 7.0
    assert raised.value.error["code"] == "rate_limit_exceeded"


@pytest.mark.parametrize(
    ("fault", "error"),
    [("timeout", UpstreamTimeout), ("500", UpstreamError), ("429", UpstreamRateLimited)],
)
def test_stream_refusals_raise_before_any_chunk(
    mock: MockTransport, fault: str, error: type[UpstreamError]
) -> None:
    mock.fail = fault
    with pytest.raises(error):
        chat_stream(PARAMS)


@pytest.mark.parametrize("fault", ["malformed", "cut"])
def test_stream_failures_midway_raise_from_the_iterator(mock: MockTransport, fault: str) -> None:
    mock.fail = fault
    chunks = chat_stream(PARAMS)
    received = []
    with pytest.raises(UpstreamError) as raised:
        for chunk in chunks:
            received.append(chunk)
    assert raised.value.status == 502
    if fault == "cut":
        assert received  # some chunks arrived first
        assert all(chunk["choices"] for chunk in received)  # but never the usage


def test_timeout_comes_from_settings(mock: MockTransport, settings: Any) -> None:
    settings.QUOTAS = {**getattr(settings, "QUOTAS", {}), "UPSTREAM_TIMEOUT": 0.5}
    mock.latency = 5
    with pytest.raises(UpstreamTimeout):
        chat(PARAMS)
    assert mock.sleep == [0.5]


def test_chat_needs_model_and_messages(mock: MockTransport) -> None:
    with pytest.raises(ValueError, match="model"):
        chat({"messages": []})
    assert mock.calls == 0


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5),
        ({"retry-after": "3"}, 3.0),
        ({"retry-after": "0.25"}, 0.25),
        ({"retry-after": "soon"}, None),
        ({}, None),
    ],
)
def test_retry_after(headers: dict[str, str], expected: float | None) -> None:
    assert upstream.retry_after(headers) == expected


def test_retry_after_as_a_date() -> None:
    date = email.utils.formatdate(time.time() + 30, usegmt=True)
    seconds = upstream.retry_after({"retry-after": date})
    assert seconds is not None
    assert 28 <= seconds <= 30


# the provider's limits --------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def limiter(engine: QuotaEngine, clock: Clock) -> UpstreamLimiter:
    limiter = UpstreamLimiter(engine)
    limiter.clock = clock
    limiter.sleep = clock.sleep
    return limiter


def test_requests_within_the_rate_pass_at_once(limiter: UpstreamLimiter, clock: Clock) -> None:
    for _ in range(3):
        limiter.acquire("gpt-4o", 3, None, 0, max_wait=0)
    assert clock.sleeps == []


def test_waits_for_the_request_rate_then_passes(limiter: UpstreamLimiter, clock: Clock) -> None:
    limiter.acquire("gpt-4o", 2, None, 0, max_wait=0)
    limiter.acquire("gpt-4o", 2, None, 0, max_wait=0)

    limiter.acquire("gpt-4o", 2, None, 0, max_wait=60)

    assert clock.sleeps == [pytest.approx(30, abs=0.01)]


def test_refuses_when_the_wait_is_longer_than_allowed(
    limiter: UpstreamLimiter, clock: Clock
) -> None:
    limiter.acquire("gpt-4o", 2, None, 0, max_wait=0)
    limiter.acquire("gpt-4o", 2, None, 0, max_wait=0)

    with pytest.raises(UpstreamBusy) as raised:
        limiter.acquire("gpt-4o", 2, None, 0, max_wait=10)

    assert raised.value.retry_after == pytest.approx(30, abs=0.01)
    assert raised.value.status == 429
    assert clock.sleeps == []
    clock.now += 30  # the refusal took nothing
    limiter.acquire("gpt-4o", 2, None, 0, max_wait=0)


def test_token_rate(limiter: UpstreamLimiter, clock: Clock) -> None:
    limiter.acquire("gpt-4o", None, 1000, 600, max_wait=0)

    with pytest.raises(UpstreamBusy) as raised:
        limiter.acquire("gpt-4o", None, 1000, 600, max_wait=5)
    assert raised.value.retry_after == pytest.approx(12, abs=0.01)  # 200 tokens at 1000/min

    limiter.acquire("gpt-4o", None, 1000, 600, max_wait=15)
    assert clock.sleeps == [pytest.approx(12, abs=0.01)]


def test_ask_above_the_token_capacity_waits_for_a_full_bucket(
    limiter: UpstreamLimiter, clock: Clock
) -> None:
    limiter.acquire("gpt-4o", None, 1000, 5000, max_wait=0)  # empty bucket: passes at once
    limiter.acquire("gpt-4o", None, 1000, 5000, max_wait=61)

    assert clock.sleeps == [pytest.approx(60, abs=0.01)]


def test_limits_are_per_model(limiter: UpstreamLimiter) -> None:
    limiter.acquire("gpt-4o", 1, None, 0, max_wait=0)
    limiter.acquire("gpt-4o-mini", 1, None, 0, max_wait=0)
    with pytest.raises(UpstreamBusy):
        limiter.acquire("gpt-4o", 1, None, 0, max_wait=0)


def test_without_limits_nothing_is_counted(limiter: UpstreamLimiter, engine: QuotaEngine) -> None:
    for _ in range(100):
        limiter.acquire("gpt-4o", None, None, 10_000, max_wait=0)
    assert engine.subject_keys("upstream:gpt-4o") == []


def test_never_settled_reservations_do_not_pile_up(
    limiter: UpstreamLimiter, engine: QuotaEngine, clock: Clock
) -> None:
    for _ in range(50):
        limiter.acquire("gpt-4o", 1000, 100_000, 100, max_wait=0)
        clock.now += 2
    assert engine.client.zcard(engine.key("upstream:gpt-4o", "lease")) <= 1


def test_backoff_refuses_then_lets_through(engine: QuotaEngine) -> None:
    limiter, other_server = UpstreamLimiter(engine), UpstreamLimiter(engine)
    slept = Sleeps()

    def sleep(seconds: float) -> None:
        slept(seconds)
        time.sleep(seconds)

    other_server.sleep = sleep

    limiter.backoff("gpt-4o", 0.2)

    with pytest.raises(UpstreamBusy) as raised:
        other_server.acquire("gpt-4o", None, None, 0, max_wait=0.05)
    assert 0 < raised.value.retry_after <= 0.2
    other_server.acquire("gpt-4o", None, None, 0, max_wait=2)
    assert len(slept) >= 1
    assert sum(slept) <= 0.25
    assert limiter.backoff_remaining("gpt-4o") == 0


def test_backoff_only_ever_extends(engine: QuotaEngine) -> None:
    limiter = UpstreamLimiter(engine)
    limiter.backoff("gpt-4o", 5)
    limiter.backoff("gpt-4o", 1)
    assert limiter.backoff_remaining("gpt-4o") > 4
    assert limiter.backoff_remaining("gpt-4o-mini") == 0


@pytest.mark.parametrize(
    ("rpm", "tpm", "backoff", "needed"),
    [
        (None, None, 0.0, False),  # nothing to wait for: no call of its own
        (60, None, 0.0, True),
        (None, 1000, 0.0, True),
        (None, None, 2.5, True),  # a provider backoff holds
        (None, None, None, True),  # the backoff could not be read with the reservation
    ],
)
def test_the_limiter_is_needed_only_for_limits_or_a_backoff(rpm, tpm, backoff, needed):
    model = AIModel(name="m", upstream_requests_per_minute=rpm, upstream_tokens_per_minute=tpm)
    assert upstream.needs_limiter(model, backoff) is needed
