from __future__ import annotations

import pytest

from quotas.engine import Decision, Limit, LimitState
from quotas.headers import rate_limit_headers, retry_after_seconds

RATE = LimitState("requests_per_minute", "rr", limit=10, used=7, remaining=3, reset_after=4.2)
DAY = LimitState("requests_per_day", "dr", limit=1000, used=10, remaining=990, reset_after=360)
TOKENS = LimitState("tokens_per_day", "dt", 20_000, 5000, 15_000, reset_after=3723.5)
MONTH = LimitState("tokens_per_month", "mt", 200_000, 5000, 195_000, reset_after=86_400)
SPEND = LimitState("spend_per_month", "ms", 1_000_000, 0, 1_000_000, reset_after=86_400)
CONCURRENT = LimitState("max_concurrent_requests", "cc", 2, 1, 1, reset_after=0)


def decision(*states: LimitState, allowed: bool = True, retry_after: float = 0.0) -> Decision:
    return Decision(
        allowed=allowed,
        denied_by=None if allowed else states[0].name,
        retry_after=retry_after,
        now_us=0,
        states=states,
    )


def test_ietf_ratelimit_fields():
    headers = rate_limit_headers(decision(RATE, DAY, TOKENS, SPEND))
    assert headers["RateLimit-Policy"] == (
        '"requests_per_minute";q=10;w=60, "requests_per_day";q=1000;w=86400, '
        '"tokens_per_day";q=20000;w=86400, "spend_per_month";q=1.0;w=2592000'
    )
    assert headers["RateLimit"] == (
        '"requests_per_minute";r=3;t=5, "requests_per_day";r=990;t=360, '
        '"tokens_per_day";r=15000;t=3724, "spend_per_month";r=1.0;t=86400'
    )


def test_a_rate_is_shown_per_minute_not_as_its_burst():
    """A tier of 10 a minute with a burst of 5: the engine's bucket holds 5."""
    bucket = LimitState("requests_per_minute", "rr", limit=5, used=1, remaining=4, reset_after=6)
    limits = (Limit("requests_per_minute", "rr", 10, burst=5),)
    headers = rate_limit_headers(decision(bucket), limits)
    assert headers["RateLimit-Policy"] == '"requests_per_minute";q=10;w=60'
    assert headers["RateLimit"] == '"requests_per_minute";r=4;t=6'
    assert headers["x-ratelimit-limit-requests"] == "10"
    assert headers["x-ratelimit-remaining-requests"] == "4"


def test_spend_in_usd():
    used = LimitState("spend_per_month", "ms", 1_000_000, 150, 999_850, reset_after=86_400)
    headers = rate_limit_headers(decision(used))
    assert headers["x-ratelimit-limit-spend"] == "1.000000"
    assert headers["x-ratelimit-remaining-spend"] == "0.999850"
    assert headers["x-ratelimit-reset-spend"] == "24h0m0s"
    assert headers["RateLimit"] == '"spend_per_month";r=0.999;t=86400'  # rounded down


def test_a_rate_refusal_is_retryable_with_its_wait_in_milliseconds():
    headers = rate_limit_headers(decision(RATE, allowed=False, retry_after=0.25))
    assert (headers["Retry-After"], headers["retry-after-ms"]) == ("1", "250")
    assert "x-should-retry" not in headers


def test_a_concurrency_refusal_is_retryable():
    headers = rate_limit_headers(decision(CONCURRENT, allowed=False, retry_after=2.5))
    assert (headers["Retry-After"], headers["retry-after-ms"]) == ("3", "2500")
    assert "x-should-retry" not in headers


@pytest.mark.parametrize("budget", [DAY, TOKENS, MONTH, SPEND])
def test_a_budget_refusal_tells_sdks_not_to_retry(budget):
    headers = rate_limit_headers(decision(budget, RATE, allowed=False, retry_after=3600))
    assert headers["x-should-retry"] == "false"
    assert headers["Retry-After"] == "3600"


def test_concurrency_is_not_a_ratelimit_field():
    headers = rate_limit_headers(decision(RATE, CONCURRENT))
    assert "max_concurrent_requests" not in headers["RateLimit-Policy"]
    assert "max_concurrent_requests" not in headers["RateLimit"]


def test_openai_headers_from_the_tightest_limits():
    headers = rate_limit_headers(decision(RATE, DAY, TOKENS, MONTH))
    assert headers["x-ratelimit-limit-requests"] == "10"
    assert headers["x-ratelimit-remaining-requests"] == "3"
    assert headers["x-ratelimit-reset-requests"] == "4.2s"
    assert headers["x-ratelimit-limit-tokens"] == "20000"
    assert headers["x-ratelimit-remaining-tokens"] == "15000"
    assert headers["x-ratelimit-reset-tokens"] == "1h2m4s"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.5, "0.5s"),
        (1, "1s"),
        (12.3456, "12.346s"),
        (360, "6m0s"),
        (61.2, "1m2s"),
        (7200, "2h0m0s"),
    ],
)
def test_openai_duration_strings(seconds, text):
    state = LimitState("requests_per_day", "dr", 5, 5, 0, reset_after=seconds)
    assert rate_limit_headers(decision(state))["x-ratelimit-reset-requests"] == text


def test_no_token_headers_without_a_token_limit():
    headers = rate_limit_headers(decision(RATE))
    assert not any("tokens" in name for name in headers)


def test_no_headers_without_limits():
    assert rate_limit_headers(decision()) == {}


def test_retry_after_only_when_denied():
    assert "Retry-After" not in rate_limit_headers(decision(RATE))
    denied = decision(RATE, allowed=False, retry_after=2.01)
    assert rate_limit_headers(denied)["Retry-After"] == "3"


@pytest.mark.parametrize(("wait", "seconds"), [(0, 1), (0.001, 1), (1.0, 1), (1.5, 2), (90, 90)])
def test_retry_after_whole_seconds_at_least_one(wait, seconds):
    assert retry_after_seconds(decision(RATE, allowed=False, retry_after=wait)) == seconds
