"""Errors shaped like OpenAI's: {"error": {"message", "type", "param", "code"}}."""

from __future__ import annotations

from typing import Any

from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from ..engine import Decision, Limit, Usage
from ..exceptions import QuotaError, QuotaExceeded
from ..throttling import DECISION_ATTR, LIMITS_ATTR


def error_body(
    message: str, type_: str, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def error_response(
    status_code: int,
    message: str,
    type_: str,
    code: str | None = None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    return Response(error_body(message, type_, code, param), status=status_code, headers=headers)


def counters_unavailable() -> Response:
    """503 while Redis cannot be reached and the request cannot be decided without it."""
    return error_response(
        503,
        "Quota counters are unavailable; try again shortly.",
        "server_error",
        "quota_unavailable",
        headers={"Retry-After": "1"},
    )


def denial_response(decision: Decision, limits: tuple[Limit, ...] = ()) -> Response:
    """429 for a request the throttle refused (it asks one request of every limit)."""
    exc = QuotaExceeded.from_decision(decision, limits=limits, asked=Usage(requests=1))
    return error_response(
        status.HTTP_429_TOO_MANY_REQUESTS, exc.message, exc.type, exc.code, headers=exc.headers()
    )


ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "requests",
    503: "server_error",
}


def quota_error_response(exc: QuotaError) -> Response:
    """The OpenAI-shaped answer to any error of the call lifecycle."""
    return error_response(exc.status, exc.message, exc.type, exc.code, exc.param, exc.headers())


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's handler, with OpenAI-shaped bodies."""
    request = context.get("request")
    if isinstance(exc, QuotaError):
        if isinstance(exc, QuotaExceeded) and request is not None:
            raw = getattr(request, "_request", request)
            setattr(raw, DECISION_ATTR, exc.decision)
            setattr(raw, LIMITS_ATTR, exc.limits)
        return quota_error_response(exc)
    if isinstance(exc, exceptions.Throttled) and request is not None:
        raw = getattr(request, "_request", request)
        decision = getattr(raw, DECISION_ATTR, None)
        if decision is not None and not decision.allowed:
            return denial_response(decision, getattr(raw, LIMITS_ATTR, ()))
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    detail = response.data
    param = None
    if isinstance(exc, exceptions.ValidationError) and isinstance(detail, dict):
        param, messages = next(iter(detail.items()))
        if isinstance(messages, list):
            messages = " ".join(str(m) for m in messages)
        message = f"{param}: {messages}"
    elif isinstance(detail, dict) and "detail" in detail:
        message = str(detail["detail"])
    elif isinstance(detail, list):
        message = " ".join(str(m) for m in detail)
    else:
        message = str(detail)
    code = getattr(exc, "default_code", None)
    if isinstance(exc, exceptions.APIException):
        codes = exc.get_codes()
        if isinstance(codes, str):
            code = codes
    if isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed):
        code = "invalid_api_key"
    response.data = error_body(
        message, ERROR_TYPES.get(response.status_code, "invalid_request_error"), code, param
    )
    if response.status_code == 503 and "Retry-After" not in response:
        response["Retry-After"] = "1"
    return response
