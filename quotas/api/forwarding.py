"""What every `/v1/` endpoint calling the provider shares: reading the body, the provider's
errors as OpenAI-shaped answers, and the streamed answer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Iterator

from asgiref.sync import sync_to_async
from django.core.exceptions import RequestDataTooBig
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, StreamingHttpResponse
from rest_framework.request import Request
from rest_framework.response import Response

from .. import upstream
from ..conf import conf
from ..exceptions import InvalidRequest
from ..services import service
from .errors import error_response

DOWNGRADE_HEADER = "X-Quota-Downgraded-From"

UPSTREAM_ERRORS = (upstream.UpstreamTimeout, upstream.UpstreamRateLimited, upstream.UpstreamError)


class RequestTooLarge(InvalidRequest):
    status = 413


def read_body(request: Request | HttpRequest) -> bytes:
    """The raw body, at most MAX_REQUEST_BYTES; a QuotaError-shaped 413 above that."""
    raw = request._request if isinstance(request, Request) else request
    limit = conf.MAX_REQUEST_BYTES
    too_big = RequestTooLarge(
        f"The request body is larger than {limit} bytes.", code="request_too_large"
    )
    try:
        length = int(raw.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length > limit:
        raise too_big
    try:
        body = raw.body
    except RequestDataTooBig:
        raise too_big from None
    if len(body) > limit:
        raise too_big
    return body


def upstream_error(exc: Exception, model: str) -> Response:
    """The answer to a provider failure before anything was sent to the caller."""
    if isinstance(exc, upstream.UpstreamNotConfigured):
        return error_response(503, exc.message, "server_error", "provider_not_configured")
    if isinstance(exc, upstream.UpstreamTimeout):
        return error_response(504, "The model provider timed out.", "server_error", "timeout")
    if isinstance(exc, upstream.UpstreamRateLimited):
        wait = max(1, int(exc.retry_after or 1))
        service.provider_backoff(model, float(wait))
        return error_response(
            503,
            f"The model provider is rate limiting '{model}'. Retry after {wait} s.",
            "server_error",
            "upstream_rate_limited",
            headers={"Retry-After": str(wait)},
        )
    return error_response(
        502, f"The model provider failed: {exc}", "server_error", "upstream_error"
    )


def event_stream(
    body: Iterable[bytes], headers: dict[str, str], request: Request | None = None
) -> StreamingHttpResponse:
    """A server-sent events answer, unbuffered by proxies; under ASGI sent part by part."""
    raw = request._request if request is not None else None
    content = PartByPart(body) if isinstance(raw, ASGIRequest) else body
    response = StreamingHttpResponse(content, content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    for name, value in headers.items():  # the rate-limit headers: finalize_response
        response[name] = value
    return response


class PartByPart:
    """A sync stream sent under ASGI as it comes, each part read in the request's worker
    thread (Django would read a sync stream whole before sending any of it)."""

    def __init__(self, body: Iterable[bytes]) -> None:
        self.body = body
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        parts = iter(self.body)
        read = sync_to_async(_next_part)
        try:
            while (part := await read(parts)) is not None:
                yield part
        finally:
            # Django does not close the response of a client that went away: closed here.
            await asyncio.shield(sync_to_async(self.close)())

    def close(self) -> None:
        """Close the stream (it settles its call) once."""
        if self.closed:
            return
        self.closed = True
        close = getattr(self.body, "close", None)
        if close is not None:
            close()


def _next_part(parts: Iterator[bytes]) -> bytes | None:
    return next(parts, None)
