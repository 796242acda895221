"""What every `/v1/` endpoint calling the provider shares: reading the body, the provider's
errors as OpenAI-shaped answers, and the streamed answer."""

from __future__ import annotations

from collections.abc import Iterable

from django.core.exceptions import RequestDataTooBig
from django.http import StreamingHttpResponse
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


def read_body(request: Request) -> bytes:
    """The raw body, at most MAX_REQUEST_BYTES; a QuotaError-shaped 413 above that."""
    raw = request._request
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


def event_stream(body: Iterable[bytes], headers: dict[str, str]) -> StreamingHttpResponse:
    """A server-sent events answer, unbuffered by proxies."""
    response = StreamingHttpResponse(body, content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    for name, value in headers.items():  # the rate-limit headers: finalize_response
        response[name] = value
    return response
