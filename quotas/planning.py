"""Planning one AI call under the caller's quota: the model, the output cap, the worst case.

Every tier rule that decides a call before anything is reserved lives here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import policy
from .conf import conf
from .exceptions import InvalidRequest, NoTier, QuotaBlocked
from .limit_kinds import KINDS
from .models import AIModel
from .tokens import count_prompt_tokens
from .unpriced import check_priced

# Bounds on what one call may ask for, so every amount reaching the counters stays an
# exact integer (Lua numbers are doubles).
MAX_OUTPUT_TOKENS = 10_000_000
MAX_CHOICES = 128
MAX_TOKENS = 2**40

# Request parameters billed as input besides the messages.
# (`text` holds a Responses request's output format and its schema.)
BILLED_INPUT_PARAMS = ("functions", "response_format", "tool_choice", "function_call", "text")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class Plan:
    """What a call may do under the caller's quota, before anything is reserved."""

    model: AIModel
    max_tokens: int
    output_param: str  # "max_tokens" or "max_completion_tokens": the one to forward
    choices: int
    prompt_tokens: int
    worst_tokens: int


def choose_model(quota: policy.Quota, catalogue: dict[str, AIModel], name: Any) -> AIModel:
    """The asked model, or the tier's default; it must exist and be allowed."""
    name = name or quota.default_model
    if name is None:
        raise InvalidRequest("Missing required parameter: 'model'.", "model", "missing")
    if not isinstance(name, str):
        raise InvalidRequest("'model' must be a string.", "model", "invalid_type")
    model = catalogue.get(name)
    if model is None:
        raise InvalidRequest(f"The model '{name}' does not exist.", "model", "model_not_found")
    if quota.allowed_models and name not in quota.allowed_models:
        raise InvalidRequest(
            f"Your tier does not allow the model '{name}'; allowed: "
            f"{', '.join(quota.allowed_models)}.",
            "model",
            "model_not_allowed",
        )
    return model


def output_cap(
    quota: policy.Quota,
    max_tokens: Any,
    max_completion_tokens: Any,
    max_output_tokens: Any = None,
) -> tuple[int, str]:
    """(output cap, parameter to forward): defaulted, bounded, checked against the tier.

    When several are sent the largest one counts, and it alone is forwarded.
    `max_output_tokens` is the Responses API's name for it.
    """
    given = {
        name: value
        for name, value in (
            ("max_output_tokens", max_output_tokens),
            ("max_completion_tokens", max_completion_tokens),
            ("max_tokens", max_tokens),
        )
        if value is not None
    }
    for name, value in given.items():
        if not _is_int(value) or value < 1:
            raise InvalidRequest(f"'{name}' must be a positive integer.", name, "invalid_value")
        if value > MAX_OUTPUT_TOKENS:
            raise InvalidRequest(
                f"'{name}' is {value}, more than {MAX_OUTPUT_TOKENS:,} tokens.",
                name,
                "invalid_value",
            )
    cap = quota.max_tokens_per_request
    param = next(iter(given), "max_tokens")
    if not given:
        default = conf.DEFAULT_MAX_TOKENS
        return (default if cap is None else min(default, cap)), param
    value = max(given.values())
    if cap is not None and value > cap:
        name = next(n for n, v in given.items() if v == value)
        raise InvalidRequest(
            f"'{name}' is {value}, over your tier's limit of {cap} tokens per request.",
            name,
            "max_tokens_exceeded",
        )
    return value, param


def estimate_prompt(model: str, messages: Any, tools: Any, params: dict[str, Any]) -> int:
    """Input tokens as the provider bills them: messages, tool and function definitions,
    response schemas and tool choice."""
    extra = [params[name] for name in BILLED_INPUT_PARAMS if params.get(name) is not None]
    if tools is not None:
        extra.insert(0, tools)
    return count_prompt_tokens(messages or [], model, extra or None)


def plan_call(
    quota: policy.Quota,
    catalogue: dict[str, AIModel],
    *,
    model: Any,
    messages: Any,
    tools: Any,
    max_tokens: Any,
    n: Any,
    tokens: Any,
    params: dict[str, Any],
) -> Plan:
    """Apply the tier's rules to one call; raises InvalidRequest naming the parameter."""
    if quota.blocked:
        raise QuotaBlocked("This account's quota is blocked.")
    if quota.no_tier:
        raise NoTier()
    chosen = choose_model(quota, catalogue, model)
    check_priced(tools, params)
    cap, param = output_cap(
        quota, max_tokens, params.get("max_completion_tokens"), params.get("max_output_tokens")
    )
    if n is None:
        n = 1
    if not _is_int(n) or not 1 <= n <= MAX_CHOICES:
        raise InvalidRequest(
            f"'n' must be an integer from 1 to {MAX_CHOICES}.", "n", "invalid_value"
        )
    if tokens is not None:
        if not _is_int(tokens) or not 0 <= tokens <= MAX_TOKENS:
            raise InvalidRequest(
                f"'tokens' must be an integer from 0 to {MAX_TOKENS}.", "tokens", "invalid_value"
            )
        prompt, worst = tokens, tokens
    else:
        prompt = estimate_prompt(chosen.name, messages, tools, params)
        worst = prompt + cap * n
    for kind in KINDS:  # a token budget or rate smaller than the worst case never passes
        name = kind.field
        budget = getattr(quota, name) if kind.resource == "tokens" else None
        if budget is not None and worst > budget:
            raise InvalidRequest(
                f"This request needs up to {worst} tokens ({prompt} prompt + "
                f"{worst - prompt} completion), more than your whole {name} "
                f"of {budget}. Shorten the messages or lower max_tokens.",
                "messages",
                "context_length_exceeded",
            )
    return Plan(chosen, cap, param, n, prompt, worst)
