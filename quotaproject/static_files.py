"""WhiteNoise's middleware, sync and async: under ASGI a request passing it keeps the async
path (a sync-only middleware would cost every request a thread of its own)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.http import HttpRequest
from whitenoise.middleware import WhiteNoiseMiddleware


class StaticFilesMiddleware(WhiteNoiseMiddleware):
    """Serves the static files (as WhiteNoise does) and passes every other request on."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[Any], Any], settings: Any = settings) -> None:
        super().__init__(get_response, settings)
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self._acall(request)
        return super().__call__(request)

    async def _acall(self, request: HttpRequest) -> Any:
        # A lookup in memory; on disk only with WHITENOISE_AUTOREFRESH (DEBUG, the tests).
        if self.autorefresh:
            static_file = self.find_file(request.path_info)
        else:
            static_file = self.files.get(request.path_info)
        if static_file is not None:
            return self.serve(static_file, request)
        return await self.get_response(request)
