"""Adds the rate-limit headers of the request's quota decision to its response."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction

from .headers import add_rate_limit_headers
from .throttling import DECISION_ATTR


class RateLimitHeadersMiddleware:
    """`RateLimit-*` and `x-ratelimit-*` headers on every answer a quota decided.

    Sync and async: under ASGI it costs the request no thread switch.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: Any) -> Any:
        if self.is_async:
            return self._acall(request)
        return _with_headers(request, self.get_response(request))

    async def _acall(self, request: Any) -> Any:
        return _with_headers(request, await self.get_response(request))


def _with_headers(request: Any, response: Any) -> Any:
    decision = getattr(request, DECISION_ATTR, None)
    if decision is not None:
        add_rate_limit_headers(response, decision)
    return response
