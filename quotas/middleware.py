"""Middleware: rate-limit headers on answers, and requests Django cannot serve as sent."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote_to_bytes

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponse, JsonResponse

from .conf import conf
from .headers import add_rate_limit_headers
from .throttling import DECISION_ATTR, LIMITS_ATTR

NUL = "\x00"
READ_CHUNK = 65_536


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
        add_rate_limit_headers(response, decision, getattr(request, LIMITS_ATTR, ()))
    return response


def refusal(status: int, message: str, code: str) -> JsonResponse:
    error = {"message": message, "type": "invalid_request_error", "param": None, "code": code}
    return JsonResponse({"error": error}, status=status)


class MalformedRequestMiddleware:
    """Put first in MIDDLEWARE. NUL bytes in the path, query string or a header: 400.
    A cookie holding one is dropped (a session cookie so is no session). A chunked body is
    read where the server has decoded it (gunicorn, ASGI servers), else 411."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self.__acall__(request)
        return self.refuse(request) or self.get_response(request)

    async def __acall__(self, request: HttpRequest) -> Any:
        return self.refuse(request) or await self.get_response(request)

    def refuse(self, request: HttpRequest) -> HttpResponse | None:
        """The answer to a request that cannot be served as sent; None to serve it."""
        meta = request.META
        if NUL in request.path_info or b"\x00" in unquote_to_bytes(meta.get("QUERY_STRING", "")):
            return refusal(400, "The URL contains a NUL byte.", "invalid_url")
        for name, value in meta.items():
            if name.startswith("HTTP_") and name != "HTTP_COOKIE" and NUL in str(value):
                header = name[5:].replace("_", "-").title()
                return refusal(400, f"The {header} header contains a NUL byte.", "invalid_header")
        # Cookies are parsed unquoted: `"abc\\000def"` holds a NUL byte too.
        cookies = request.COOKIES
        if any(NUL in name + value for name, value in cookies.items()):
            request.COOKIES = {k: v for k, v in cookies.items() if NUL not in k + v}
        if "chunked" in meta.get("HTTP_TRANSFER_ENCODING", "").lower():
            return self.read_chunked(request)
        return None

    def read_chunked(self, request: HttpRequest) -> HttpResponse | None:
        """Reads a chunked body into the request, bounded by MAX_REQUEST_BYTES."""
        meta = request.META
        limit = conf.MAX_REQUEST_BYTES
        if "wsgi.input" not in meta:  # ASGI: the server has read the whole body
            body = request.body
        elif meta.get("wsgi.input_terminated"):
            stream, parts, size = meta["wsgi.input"], [], 0
            while size <= limit and (part := stream.read(READ_CHUNK)):
                parts.append(part)
                size += len(part)
            body = b"".join(parts)
        else:
            return refusal(
                411,
                "This server cannot read chunked request bodies: send a Content-Length header.",
                "length_required",
            )
        if len(body) > limit:
            return refusal(
                413, f"The request body is larger than {limit} bytes.", "request_too_large"
            )
        # What Django itself keeps once it has read a body; Content-Length for DRF's parsers.
        request._body = body
        request._stream = io.BytesIO(body)
        meta["CONTENT_LENGTH"] = str(len(body))
        return None
