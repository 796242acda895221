"""One reading of provider-reported usage, whatever the endpoint and however it came."""

from __future__ import annotations

from typing import Any, NamedTuple


class TokenUsage(NamedTuple):
    """Tokens of one call; None where the provider did not say."""

    prompt_tokens: Any = None
    completion_tokens: Any = None
    cached_tokens: Any = None
    reasoning_tokens: Any = None


def _field(source: Any, name: str) -> Any:
    if source is None:
        return None
    if isinstance(source, dict):
        return source.get(name)
    return getattr(source, name, None)


def _count(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def _first(source: Any, *names: str) -> int | None:
    for name in names:
        value = _count(_field(source, name))
        if value is not None:
            return value
    return None


def normalise_usage(usage: Any) -> TokenUsage:
    """Chat (`prompt_tokens`/`completion_tokens`), Responses (`input_tokens`/`output_tokens`)
    and embeddings (`prompt_tokens` alone) usage, as an SDK object or a dict."""
    if usage is None:
        return TokenUsage()
    prompt = _first(usage, "prompt_tokens", "input_tokens")
    completion = _first(usage, "completion_tokens", "output_tokens")
    if completion is None and prompt is not None:
        total = _first(usage, "total_tokens")
        if total is not None and total >= prompt:
            completion = total - prompt  # embeddings: total == prompt
    input_details = _field(usage, "prompt_tokens_details") or _field(usage, "input_tokens_details")
    output_details = _field(usage, "completion_tokens_details") or _field(
        usage, "output_tokens_details"
    )
    return TokenUsage(
        prompt,
        completion,
        _first(input_details, "cached_tokens"),
        _first(output_details, "reasoning_tokens"),
    )
