"""Rate-limit response headers from a decision: IETF RateLimit fields and OpenAI's x-ratelimit-*."""

from __future__ import annotations

import math
from typing import Any

from .engine import Decision, LimitState
from .limit_kinds import kind_of


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


def rate_limit_headers(decision: Decision) -> dict[str, str]:
    headers: dict[str, str] = {}
    kinds = {state: kind_of(state.name, state.code) for state in decision.states}
    counted = [s for s in decision.states if kinds[s].period != "in_flight"]
    if counted:
        headers["RateLimit-Policy"] = ", ".join(
            f'"{s.name}";q={s.limit};w={kinds[s].window_seconds}' for s in counted
        )
        headers["RateLimit"] = ", ".join(
            f'"{s.name}";r={s.remaining};t={math.ceil(s.reset_after)}' for s in counted
        )
    requests = _tightest([s for s in counted if kinds[s].resource == "requests"])
    if requests is not None:
        headers["x-ratelimit-limit-requests"] = str(requests.limit)
        headers["x-ratelimit-remaining-requests"] = str(requests.remaining)
        headers["x-ratelimit-reset-requests"] = _duration(requests.reset_after)
    tokens = _tightest([s for s in counted if kinds[s].resource == "tokens"])
    if tokens is not None:
        headers["x-ratelimit-limit-tokens"] = str(tokens.limit)
        headers["x-ratelimit-remaining-tokens"] = str(tokens.remaining)
        headers["x-ratelimit-reset-tokens"] = _duration(tokens.reset_after)
    if not decision.allowed:
        headers["Retry-After"] = str(retry_after_seconds(decision))
    return headers


def add_rate_limit_headers(response: Any, decision: Decision) -> None:
    """Put the decision's headers on `response`, keeping any the view set itself.

    A response passes the view and then the middleware: the second time, with the same
    decision, there is nothing left to add.
    """
    if getattr(response, "_rate_limit_decision", None) is decision:
        return
    for name, value in rate_limit_headers(decision).items():
        if name not in response:
            response[name] = value
    response._rate_limit_decision = decision


def retry_after_seconds(decision: Decision) -> int:
    """Whole seconds, at least 1."""
    return max(1, math.ceil(decision.retry_after))
