"""The tier's rules for one call, before anything is reserved."""

from __future__ import annotations

from decimal import Decimal

import pytest

from quotas.exceptions import InvalidRequest, QuotaBlocked
from quotas.models import AIModel
from quotas.planning import MAX_OUTPUT_TOKENS, output_cap, plan_call
from quotas.policy import Quota
from quotas.tokens import count_prompt_tokens

HELLO = [{"role": "user", "content": "Hello"}]
MINI = AIModel(name="gpt-4o-mini", input_price_per_million=Decimal("0.15"))
CATALOGUE = {"gpt-4o-mini": MINI}


def plan(quota: Quota, **kwargs):
    args = {"model": None, "messages": HELLO, "tools": None, "max_tokens": None, "n": 1}
    args.update(kwargs)
    return plan_call(quota, CATALOGUE, tokens=args.pop("tokens", None), params={}, **args)


def test_the_default_model_and_output_cap() -> None:
    planned = plan(Quota(default_model="gpt-4o-mini", max_tokens_per_request=100), n=2)

    assert planned.model is MINI
    assert planned.max_tokens == 100
    assert planned.worst_tokens == count_prompt_tokens(HELLO, "gpt-4o-mini") + 200


def test_tools_count_as_input() -> None:
    tools = [{"type": "function", "function": {"name": "lookup", "description": "x " * 500}}]

    bare = plan(Quota(default_model="gpt-4o-mini"))
    with_tools = plan(Quota(default_model="gpt-4o-mini"), tools=tools)

    assert with_tools.prompt_tokens - bare.prompt_tokens >= 500


def test_a_given_worst_case() -> None:
    planned = plan(Quota(default_model="gpt-4o-mini"), tokens=700)

    assert (planned.prompt_tokens, planned.worst_tokens) == (700, 700)


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"model": "gpt-5"}, "model"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": MAX_OUTPUT_TOKENS + 1}, "max_tokens"),
        ({"n": 0}, "n"),
        ({"tokens": -1}, "tokens"),
        ({"tokens": 2**60}, "tokens"),
    ],
)
def test_out_of_range_is_refused_naming_the_parameter(kwargs, param) -> None:
    with pytest.raises(InvalidRequest) as refused:
        plan(Quota(default_model="gpt-4o-mini"), **kwargs)

    assert refused.value.param == param


def test_blocked_is_refused() -> None:
    with pytest.raises(QuotaBlocked):
        plan(Quota(default_model="gpt-4o-mini", blocked=True))


def test_the_larger_output_cap_counts_and_the_sent_name_is_forwarded() -> None:
    assert output_cap(Quota(), 20, 3) == (20, "max_completion_tokens")
    assert output_cap(Quota(), 20, None) == (20, "max_tokens")


def test_max_output_tokens_is_the_responses_output_cap() -> None:
    assert output_cap(Quota(), None, None, 30) == (30, "max_output_tokens")
    with pytest.raises(InvalidRequest) as refused:
        output_cap(Quota(max_tokens_per_request=20), None, None, 30)
    assert refused.value.param == "max_output_tokens"
