from __future__ import annotations

from datetime import UTC, datetime

import pytest

from quotas.denials import duration, is_retryable, message, reset_time
from quotas.engine import Decision, Limit, LimitState, Usage

# 06:31:30 UTC: today's windows end in 17 h 28 min 30 s.
NOW_US = int(datetime(2026, 12, 2, 6, 31, 30, tzinfo=UTC).timestamp() * 1_000_000)
TO_MIDNIGHT = 17 * 3600 + 28 * 60 + 30


def refused(state: LimitState, retry_after: float) -> Decision:
    return Decision(
        allowed=False, denied_by=state.name, retry_after=retry_after, now_us=NOW_US, states=(state,)
    )


TOKENS = LimitState("tokens_per_day", "dt", 20_000, 19_700, 300, TO_MIDNIGHT)
REQUESTS = LimitState("requests_per_day", "dr", 200, 200, 0, TO_MIDNIGHT)
SPEND = LimitState("spend_per_month", "ms", 1_000_000, 996_900, 3_100, 29 * 86_400)
RATE = LimitState("requests_per_minute", "rr", 5, 5, 0, 6.0)
CONCURRENT = LimitState("max_concurrent_requests", "cc", 2, 2, 0, 1.5)
TOKEN_RATE = LimitState("tokens_per_minute", "rt", 10_000, 9_900, 100, 0.6)
SPEND_TODAY = LimitState("spend_per_day", "ds", 500_000, 499_000, 1_000, TO_MIDNIGHT)


def test_a_daily_budget_says_what_was_needed_what_was_left_and_when_it_resets():
    text = message(refused(TOKENS, TO_MIDNIGHT), asked=Usage(1, 1200, 0))
    assert text == (
        "You exceeded your quota: tokens_per_day is 20000 tokens; this request needs up to "
        "1200 tokens, with 300 tokens left. It resets at 00:00 UTC, in 17 h 28 min."
    )


def test_requests_per_day_counts_requests():
    text = message(refused(REQUESTS, TO_MIDNIGHT), asked=Usage(requests=1))
    assert "requests_per_day is 200 requests; this request needs 1 request, with 0 requests" in text


def test_the_reset_in_the_quota_time_zone():
    # Midnight in Paris is 23:00 UTC: 16 h 28 min 30 s from now.
    text = message(refused(TOKENS, TO_MIDNIGHT - 3600), time_zone="Europe/Paris")
    assert text.endswith("It resets at 00:00 CET, in 16 h 28 min.")


def test_a_monthly_spend_budget_in_usd_with_its_date():
    text = message(refused(SPEND, 29 * 86_400 + TO_MIDNIGHT), asked=Usage(1, 500, 12_500))
    assert text == (
        "You exceeded your quota: spend_per_month is $1.00; this request needs up to "
        "$0.0125, with $0.0031 left. It resets at 2027-01-01 00:00 UTC, in 29 d 17 h."
    )


def test_a_rate_says_its_rate_per_minute_and_its_burst():
    limits = (Limit("requests_per_minute", "rr", 10, burst=5),)
    text = message(refused(RATE, 6.0), limits=limits, asked=Usage(requests=1))
    assert text == (
        "Rate limit reached for requests_per_minute (10 requests per minute, 5 at once): "
        "this request needs 1 request, with 0 requests left. Retry after 6 s."
    )


def test_a_token_rate_says_its_tokens_per_minute():
    limits = (Limit("tokens_per_minute", "rt", 10_000),)
    text = message(refused(TOKEN_RATE, 0.6), limits=limits, asked=Usage(1, 700, 0))
    assert text == (
        "Rate limit reached for tokens_per_minute (10000 tokens per minute): this request "
        "needs up to 700 tokens, with 100 tokens left. Retry after 1 s."
    )


def test_concurrency():
    text = message(refused(CONCURRENT, 1.5))
    assert text == (
        "Too many concurrent requests: your limit max_concurrent_requests is 2 and 2 are in "
        "flight. Retry after 2 s."
    )


@pytest.mark.parametrize(
    ("state", "retryable"),
    [
        (RATE, True),
        (TOKEN_RATE, True),
        (CONCURRENT, True),
        (TOKENS, False),
        (REQUESTS, False),
        (SPEND_TODAY, False),
        (SPEND, False),
    ],
)
def test_only_rates_and_concurrency_are_retryable(state, retryable):
    assert is_retryable(refused(state, 1.0)) is retryable


def test_a_limit_no_state_names_is_retryable():
    """The provider's own backoff (a hold), for instance."""
    assert is_retryable(Decision(False, "hold", 2.0, NOW_US)) is True


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0 s"),
        (0.2, "1 s"),
        (45, "45 s"),
        (185, "3 min 5 s"),
        (180, "3 min"),
        (TO_MIDNIGHT, "17 h 28 min"),
        (7200, "2 h"),
        (12 * 86_400 + 4 * 3600 + 59, "12 d 4 h"),
    ],
)
def test_durations(seconds, text):
    assert duration(seconds) == text


def test_a_reset_a_day_or_more_away_has_its_date():
    assert reset_time(NOW_US, TO_MIDNIGHT, "UTC") == "00:00 UTC"
    assert reset_time(NOW_US, TO_MIDNIGHT + 86_400, "UTC") == "2026-12-04 00:00 UTC"
