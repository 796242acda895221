"""The `/v1/` endpoints as Django async views, served when an ASGI server runs the project.

Same HTTP contract as the DRF views of `chat` and `views`; the reservation and settlement
go through `quotas.areserve` on `redis.asyncio`, the provider call through the async SDK
client, a stream through an async iterator, and the ORM work through `in_orm_thread`.
A client that goes away is noticed by Django, which cancels the view or the stream: what
was delivered is settled (the prompt, and the text counted with the model's tokenizer
unless the provider's usage came), the provider stream is closed and the lease released.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, TypeVar

from asgiref.sync import async_to_sync
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions
from rest_framework.authentication import SessionAuthentication
from rest_framework.response import Response

from .. import calls, policy, upstream
from ..authentication import APIKeyAuthentication
from ..database import in_orm_thread, use_orm_threads
from ..engine import CountersUnavailable
from ..exceptions import QuotaError
from ..headers import add_rate_limit_headers, rate_limit_headers
from ..services import service
from ..throttling import DECISION_ATTR, TierRateThrottle
from .chat import (
    DOWNGRADE_HEADER,
    UPSTREAM_ERRORS,
    _completion_text,
    _upstream_error,
    models_list,
    read_body,
)
from .chat_input import parse_body, parse_chat_request
from .errors import counters_unavailable, error_body, exception_handler
from .views import quota_report

logger = logging.getLogger("quotas")

R = TypeVar("R", bound=HttpResponseBase)

# Tasks that must run to their end although the request that started them was cancelled.
_finishing: set[asyncio.Future[Any]] = set()


def _to_the_end(coroutine: Coroutine[Any, Any, Any]) -> asyncio.Future[Any]:
    task = asyncio.ensure_future(coroutine)
    _finishing.add(task)
    task.add_done_callback(_finishing.discard)
    return task


def _json(response: Response) -> HttpResponse:
    """A DRF Response of the error handler as a plain JSON answer."""
    answer = JsonResponse(response.data, status=response.status_code)
    for name, value in response.items():
        if name.lower() != "content-type":
            answer[name] = value
    return answer


def _refusal(exc: Exception, request: HttpRequest) -> HttpResponse:
    if isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed):
        header = APIKeyAuthentication().authenticate_header(request)
        exc.auth_header = header  # type: ignore[union-attr]  # as DRF's APIView sets it
    response = exception_handler(exc, {"request": request})
    if response is None:
        raise exc
    return _finish(request, _json(response))


def _finish(request: HttpRequest, response: R) -> R:
    decision = getattr(request, DECISION_ATTR, None)
    if decision is not None:
        add_rate_limit_headers(response, decision)
    return response


async def _caller(request: HttpRequest) -> Any:
    """The API key's owner, else the session's user (CSRF checked); else NotAuthenticated."""
    use_orm_threads()
    found = await in_orm_thread(APIKeyAuthentication().authenticate)(request)
    if found is not None:
        return found[0]
    auser = getattr(request, "auser", None)
    user = await auser() if auser is not None else None
    if user is None or not user.is_authenticated or not user.is_active:
        raise exceptions.NotAuthenticated()
    SessionAuthentication().enforce_csrf(request)  # type: ignore[arg-type]
    return user


async def _reserve(user: Any, arguments: dict[str, Any]) -> calls.AsyncMeteredCall:
    """`areserve`; a reservation the cancelled request no longer wants is given back."""
    metered = calls.areserve(user, **arguments)
    task = _to_the_end(metered.__aenter__())
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:

        def give_back(done: asyncio.Future[Any]) -> None:
            if not done.cancelled() and done.exception() is None:
                _to_the_end(metered.refund())

        task.add_done_callback(give_back)
        raise
    return metered


@csrf_exempt
async def chat_completions(request: HttpRequest) -> HttpResponseBase:
    """POST /v1/chat/completions: reserve, call, settle."""
    if request.method != "POST":
        return _refusal(exceptions.MethodNotAllowed(str(request.method)), request)
    try:
        user = await _caller(request)
        chat = parse_chat_request(parse_body(read_body(request)))
        metered = await _reserve(user, calls.reserve_arguments(chat.params))
    except (QuotaError, exceptions.APIException) as exc:
        return _refusal(exc, request)
    call = metered.call
    setattr(request, DECISION_ATTR, call.decision)
    headers = {DOWNGRADE_HEADER: call.requested_model} if call.downgraded else {}
    forward = call.provider_request(chat.params)
    if chat.stream:
        return await _stream(request, forward, metered, headers)
    try:
        reply = await upstream.achat(forward)
    except UPSTREAM_ERRORS as exc:
        await _to_the_end(metered.refund())
        return await _provider_failed(request, exc, call.model)
    except asyncio.CancelledError:
        await _to_the_end(metered.settle(completion_text=""))  # the prompt was sent
        raise
    usage = reply.get("usage")
    await _to_the_end(metered.settle(usage, completion_text=_completion_text(reply)))
    reply["model"] = call.model
    return _finish(request, JsonResponse(reply, headers=headers))


async def _provider_failed(request: HttpRequest, exc: Exception, model: str) -> HttpResponse:
    # A provider 429 records its backoff in Redis: in a worker thread.
    return _finish(request, _json(await in_orm_thread(_upstream_error)(exc, model)))


async def _stream(
    request: HttpRequest,
    params: dict[str, Any],
    metered: calls.AsyncMeteredCall,
    headers: dict[str, str],
) -> HttpResponseBase:
    options = params.get("stream_options") or {}
    include_usage = bool(options.get("include_usage"))
    params["stream_options"] = {**options, "include_usage": True}
    body = AsyncStreamSettlement(metered, include_usage)
    try:
        await body.connect(params)
    except UPSTREAM_ERRORS as exc:
        await _to_the_end(body.finish(refund=True))
        return await _provider_failed(request, exc, metered.call.model)
    except asyncio.CancelledError:
        await _to_the_end(body.finish())
        raise
    response = StreamingHttpResponse(body, content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    for name, value in headers.items():
        response[name] = value
    return _finish(request, response)


class AsyncStreamSettlement:
    """The SSE body of a streamed completion on the event loop; settles exactly once:
    when the stream ends, when Django cancels it (the client went away), or when Django
    closes the response."""

    def __init__(self, metered: calls.AsyncMeteredCall, include_usage: bool) -> None:
        self.metered = metered
        self.include_usage = include_usage
        self.provider: upstream.AsyncProviderStream | None = None
        self.chunks: AsyncIterator[dict[str, Any]] | None = None
        self.first: dict[str, Any] | None = None
        self.delivered: list[str] = []
        self.usage: Any = None
        self.finished = False

    async def connect(self, params: dict[str, Any]) -> None:
        """Open the provider stream and read its first chunk (refusals raise here)."""
        self.provider = await upstream.achat_stream(params)
        self.chunks = aiter(self.provider)
        self.first = await anext(self.chunks, None)

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._events()

    async def _events(self) -> AsyncIterator[bytes]:
        end = b"data: [DONE]\n\n"
        try:
            chunk = self.first
            while chunk is not None:
                event = self._event(chunk)
                if event is not None:
                    yield event
                assert self.chunks is not None
                chunk = await anext(self.chunks, None)
        except UPSTREAM_ERRORS as exc:
            body = error_body(f"The model provider failed mid-stream: {exc}", "server_error")
            end = f"data: {json.dumps(body)}\n\n".encode()
        finally:
            # On cancellation too: the settlement runs to its end whatever happens next.
            await _to_the_end(self.finish())
        # Settled before the client reads the end, so its next request finds the lease free.
        yield end

    def _event(self, chunk: dict[str, Any]) -> bytes | None:
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            content = (choice.get("delta") or {}).get("content")
            if isinstance(content, str):
                self.delivered.append(content)
        chunk["model"] = self.metered.call.model
        if not chunk.get("choices") and chunk.get("usage") and not self.include_usage:
            return None
        return f"data: {json.dumps(chunk)}\n\n".encode()

    async def finish(self, *, refund: bool = False) -> None:
        """Close the provider stream, then settle what was delivered (or refund)."""
        if self.finished:
            return
        self.finished = True
        try:
            if self.chunks is not None:
                await self.chunks.aclose()  # type: ignore[attr-defined]
            if self.provider is not None:
                await self.provider.aclose()
        except Exception:  # the provider's connection is going away anyway
            logger.debug("quotas: closing the provider stream failed", exc_info=True)
        finally:
            if refund:
                await self.metered.refund()
            else:
                text = "".join(self.delivered)
                await self.metered.settle(self.usage, completion_text=text)

    def close(self) -> None:
        """Django closes the response in a worker thread once it ends, however it ends."""
        if not self.finished:
            async_to_sync(self.finish)()


# the reading endpoints ---------------------------------------------------------------


def _throttled(request: HttpRequest) -> None:
    """The caller's request limits, as `TierRateThrottle` applies them to the DRF views."""
    throttle = TierRateThrottle()
    if not throttle.allow_request(request, None):
        raise exceptions.Throttled(throttle.wait())


def _models(request: HttpRequest) -> HttpResponse:
    _throttled(request)
    return JsonResponse(models_list(request.user))


def _quota(request: HttpRequest) -> HttpResponse:
    _throttled(request)
    quota = policy.quota_for_user(request.user)
    try:
        decision = service.usage(request.user.pk, quota)  # type: ignore[arg-type]
    except CountersUnavailable:
        return _json(counters_unavailable())
    headers = {k: v for k, v in rate_limit_headers(decision).items() if k != "Retry-After"}
    return JsonResponse(quota_report(quota, decision), headers=headers)


async def _reading(
    request: HttpRequest, answer: Callable[[HttpRequest], HttpResponse]
) -> HttpResponse:
    if request.method not in ("GET", "HEAD"):
        return _refusal(exceptions.MethodNotAllowed(str(request.method)), request)
    try:
        request.user = await _caller(request)
        # The quota, the catalogue and the request limits: short, in a worker thread.
        response = await in_orm_thread(answer)(request)
    except (QuotaError, exceptions.APIException) as exc:
        return _refusal(exc, request)
    return _finish(request, response)


@csrf_exempt
async def models(request: HttpRequest) -> HttpResponse:
    """GET /v1/models: the models the caller's tier may use."""
    return await _reading(request, _models)


@csrf_exempt
async def quota(request: HttpRequest) -> HttpResponse:
    """GET /v1/quota: the caller's limits, usage, remaining and reset times."""
    return await _reading(request, _quota)
