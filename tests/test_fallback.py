from __future__ import annotations

import pytest

from quotas.engine import Decision, LimitState, Usage
from quotas.fallback import running_low, serving_model
from quotas.policy import Quota

LOW_AT_20 = Quota(fallback_model="gpt-4o-mini", degrade_at_percent=20)


def state(code: str, limit: int, remaining: int, name: str | None = None) -> LimitState:
    return LimitState(name or code, code, limit, limit - remaining, remaining, 60.0)


def decision(*states: LimitState) -> Decision:
    return Decision(allowed=True, denied_by=None, retry_after=0.0, now_us=0, states=states)


@pytest.mark.parametrize(
    ("remaining", "low"),
    [(1000, False), (201, False), (200, False), (199, True), (0, True)],
)
def test_low_below_the_percent_left(remaining: int, low: bool) -> None:
    peek = decision(state("dt", 1000, remaining, "tokens_per_day"))

    assert running_low(LOW_AT_20, peek) == ("tokens_per_day" if low else None)


@pytest.mark.parametrize(
    ("code", "watched"),
    [
        ("dt", True),  # tokens per day
        ("dr", True),  # requests per day
        ("ms", True),  # spend per month
        ("rr", False),  # a rate refills within the minute
        ("cc", False),  # concurrency frees up when a request ends
        ("mt", False),
    ],
)
def test_only_day_budgets_and_monthly_spend_degrade(code: str, watched: bool) -> None:
    peek = decision(state(code, 10, 0, "the_limit"))

    assert running_low(LOW_AT_20, peek) == ("the_limit" if watched else None)


def test_the_first_low_limit_is_named() -> None:
    peek = decision(
        state("rr", 10, 0),
        state("dt", 1000, 900, "tokens_per_day"),
        state("dr", 100, 5, "requests_per_day"),
        state("ms", 5_000_000, 0, "spend_per_month"),
    )

    assert running_low(LOW_AT_20, peek) == "requests_per_day"


@pytest.mark.parametrize("percent", [None, 0])
def test_no_percent_never_low(percent: int | None) -> None:
    quota = Quota(fallback_model="gpt-4o-mini", degrade_at_percent=percent)

    assert running_low(quota, decision(state("dt", 1000, 0))) is None


def test_a_zero_limit_is_not_running_low() -> None:
    assert running_low(LOW_AT_20, decision(state("dt", 0, 0))) is None


def test_nothing_counted_is_not_low() -> None:
    assert running_low(LOW_AT_20, decision()) is None


def test_what_a_granted_request_took_is_added_back() -> None:
    granted = decision(state("dt", 1000, 150, "tokens_per_day"))  # 250 left before it took 100

    assert running_low(LOW_AT_20, granted) == "tokens_per_day"
    assert running_low(LOW_AT_20, granted, Usage(tokens=100)) is None
    assert running_low(LOW_AT_20, granted, Usage(tokens=50)) is None  # 200 left: 20% is not under
    assert running_low(LOW_AT_20, granted, Usage(tokens=49)) == "tokens_per_day"
    assert serving_model(LOW_AT_20, "gpt-4o", granted, Usage(tokens=100)) == "gpt-4o"


def test_a_denied_request_took_nothing_to_add_back() -> None:
    denied = Decision(
        allowed=False,
        denied_by="tokens_per_day",
        retry_after=3600.0,
        now_us=0,
        states=(state("dt", 1000, 150, "tokens_per_day"),),
    )

    assert running_low(LOW_AT_20, denied, Usage(tokens=100)) == "tokens_per_day"
    assert serving_model(LOW_AT_20, "gpt-4o", denied, Usage(tokens=100)) == "gpt-4o-mini"


LOW = decision(state("dt", 1000, 10, "tokens_per_day"))
PLENTY = decision(state("dt", 1000, 990, "tokens_per_day"))


def test_serving_model_falls_back_when_low() -> None:
    assert serving_model(LOW_AT_20, "gpt-4o", LOW) == "gpt-4o-mini"


def test_serving_model_keeps_the_request_while_there_is_plenty() -> None:
    assert serving_model(LOW_AT_20, "gpt-4o", PLENTY) == "gpt-4o"


def test_serving_model_without_a_fallback_keeps_the_request() -> None:
    quota = Quota(degrade_at_percent=20)

    assert serving_model(quota, "gpt-4o", LOW) == "gpt-4o"


def test_serving_model_asked_for_the_fallback_serves_it() -> None:
    assert serving_model(LOW_AT_20, "gpt-4o-mini", LOW) == "gpt-4o-mini"


def test_serving_model_without_counters_keeps_the_request() -> None:
    assert serving_model(LOW_AT_20, "gpt-4o", None) == "gpt-4o"
