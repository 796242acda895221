"""URL patterns served by a sync view under WSGI and an async view under ASGI."""

from __future__ import annotations

import asyncio
from typing import Any

from django.urls import URLPattern
from django.urls.resolvers import ResolverMatch, RoutePattern


class ServerModePattern(URLPattern):
    """Resolves to `async_view` on the event loop (Django's ASGI handler resolves there)
    and to the pattern's own sync view otherwise (WSGI, `runserver`, the test client).

    So a WSGI server keeps streaming with a sync iterator, which it sends as it comes,
    instead of an async one, which Django would collect whole before sending.
    """

    async_view: Any = None

    def resolve(self, path: str) -> ResolverMatch | None:
        match = super().resolve(path)
        if match is not None and self.async_view is not None and _on_event_loop():
            match.func = self.async_view
        return match


def _on_event_loop() -> bool:
    """Whether a coroutine is running in this thread (a loop merely marked as running,
    as Playwright's sync API leaves one, runs no task)."""
    try:
        return asyncio.current_task() is not None
    except RuntimeError:
        return False


def either(route: str, sync_view: Any, async_view: Any, *, name: str) -> URLPattern:
    """`path(route, sync_view, name=name)`, served by `async_view` under ASGI."""
    pattern = ServerModePattern(
        RoutePattern(route, name=name, is_endpoint=True), sync_view, name=name
    )
    pattern.async_view = async_view
    return pattern
