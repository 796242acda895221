"""Rate-limit response headers from a decision: IETF RateLimit fields, OpenAI's
x-ratelimit-* (and the same for spend, in USD), and on a refusal when to retry, if at all."""

from __future__ import annotations

import math
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from .denials import is_retryable, shown_limit
from .engine import Decision, Limit, LimitState
from .limit_kinds import LimitKind, kind_of
from .money import from_micros


def _duration(seconds: float) -> str:
    """OpenAI's reset format: "1s", "6m0s", "1h2m3s"."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        text = f"{seconds:.3f}".rstrip("0").rstrip(".")
        return f"{text}s"
    whole = math.ceil(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return (f"{hours}h" if hours else "") + f"{minutes}m{secs}s"


def _tightest(states: list[LimitState]) -> LimitState | None:
    return min(states, key=lambda s: (s.remaining, -s.reset_after), default=None)


def _field_value(kind: LimitKind, value: int) -> str:
    """A RateLimit field amount: a count, or USD (a structured-field decimal, rounded down
    to the thousandth) for spend."""
    if not kind.is_money:
        return str(value)
    text = f"{Decimal(value // 1000) / 1000:.3f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def rate_limit_headers(decision: Decision, limits: Iterable[Limit] = ()) -> dict[str, str]:
    """The headers of a decision; `limits` (the policy's) give rates per minute."""
    limits = tuple(limits)
    headers: dict[str, str] = {}
    kinds = {state: kind_of(state.name, state.code) for state in decision.states}
    counted = [s for s in decision.states if kinds[s].period != "in_flight"]
    if counted:
        headers["RateLimit-Policy"] = ", ".join(
            f'"{s.name}";q={_field_value(kinds[s], shown_limit(s, limits))};'
            f"w={kinds[s].window_seconds}"
            for s in counted
        )
        headers["RateLimit"] = ", ".join(
            f'"{s.name}";r={_field_value(kinds[s], s.remaining)};t={math.ceil(s.reset_after)}'
            for s in counted
        )
    for resource in ("requests", "tokens", "spend"):
        tightest = _tightest([s for s in counted if kinds[s].resource == resource])
        if tightest is None:
            continue
        amounts = (shown_limit(tightest, limits), tightest.remaining)
        # Spend in USD, as /v1/quota shows it.
        shown = [str(from_micros(a) if resource == "spend" else a) for a in amounts]
        headers[f"x-ratelimit-limit-{resource}"] = shown[0]
        headers[f"x-ratelimit-remaining-{resource}"] = shown[1]
        headers[f"x-ratelimit-reset-{resource}"] = _duration(tightest.reset_after)
    if not decision.allowed:
        headers["Retry-After"] = str(retry_after_seconds(decision))
        headers["retry-after-ms"] = str(max(1, math.ceil(decision.retry_after * 1000)))
        if not is_retryable(decision):
            headers["x-should-retry"] = "false"
    return headers


def add_rate_limit_headers(response: Any, decision: Decision, limits: Iterable[Limit] = ()) -> None:
    """Put the decision's headers on `response`, keeping any the view set itself.

    A response passes the view and then the middleware: the second time, with the same
    decision, there is nothing left to add.
    """
    if getattr(response, "_rate_limit_decision", None) is decision:
        return
    for name, value in rate_limit_headers(decision, limits).items():
        if name not in response:
            response[name] = value
    response._rate_limit_decision = decision


def retry_after_seconds(decision: Decision) -> int:
    """Whole seconds, at least 1."""
    return max(1, math.ceil(decision.retry_after))
