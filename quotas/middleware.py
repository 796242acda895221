"""Adds the rate-limit headers of the request's quota decision to its response."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .headers import add_rate_limit_headers
from .throttling import DECISION_ATTR, LIMITS_ATTR


class RateLimitHeadersMiddleware:
    """`RateLimit-*` and `x-ratelimit-*` headers on every answer a quota decided."""

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response

    def __call__(self, request: Any) -> Any:
        response = self.get_response(request)
        decision = getattr(request, DECISION_ATTR, None)
        if decision is not None:
            add_rate_limit_headers(response, decision, getattr(request, LIMITS_ATTR, ()))
        return response
