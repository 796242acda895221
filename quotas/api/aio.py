"""`/v1/chat/completions`, `/v1/models` and `/v1/quota` as Django async views, served when an
ASGI server runs the project.

Same HTTP contract as the DRF views of `chat` and `views` (the key's, user's and team's
limits in one reservation, the same refusals and headers, free reads); the reservation
and settlement go through `quotas.areserve` on `redis.asyncio`, the provider call through
the async SDK client, a stream through an async iterator, and the ORM work through
`in_orm_thread`.
A client that goes away is noticed by Django, which cancels the view or the stream: what
was delivered is settled (the prompt, and the text counted with the model's tokenizer
unless the provider's usage came), the provider stream is closed and the lease released.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
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
from ..database import in_orm_thread, use_orm_threads, without_io_if_cached
from ..engine import CountersUnavailable
from ..exceptions import QuotaError
from ..headers import add_rate_limit_headers
from ..ledger import token_details
from ..throttling import DECISION_ATTR, LIMITS_ATTR
from .catalogue import caller_models, model_object
from .chat import _completion_text
from .chat_input import parse_body, parse_chat_request
from .errors import counters_unavailable, error_body, exception_handler
from .forwarding import DOWNGRADE_HEADER, UPSTREAM_ERRORS, read_body, upstream_error
from .settlement import SettledJsonResponse
from .views import caller_quota, quota_report, read_usage, usage_headers

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
        add_rate_limit_headers(response, decision, getattr(request, LIMITS_ATTR, ()))
    return response


async def _caller(request: HttpRequest) -> Any:
    """The API key's owner, else the session's user (CSRF checked); else NotAuthenticated.

    As DRF does, `request.user` is the caller and `request.auth` the API key, if any
    (`request_key` reads it, so the key's own limits apply).
    """
    use_orm_threads()
    found = await without_io_if_cached(APIKeyAuthentication().authenticate, request)
    if found is not None:
        request.user, request.auth = found  # type: ignore[attr-defined]
        return found[0]
    auser = getattr(request, "auser", None)
    user = await auser() if auser is not None else None
    if user is None or not user.is_authenticated or not user.is_active:
        raise exceptions.NotAuthenticated()
    SessionAuthentication().enforce_csrf(request)  # type: ignore[arg-type]
    request.user, request.auth = user, None  # type: ignore[attr-defined]
    return user


async def _reserve(user: Any, key: Any, arguments: dict[str, Any]) -> calls.AsyncMeteredCall:
    """`areserve`; a reservation the cancelled request no longer wants is given back."""
    metered = calls.areserve(user, key=key, **arguments)
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
        key = getattr(request, "auth", None)
        metered = await _reserve(user, key, calls.reserve_arguments(chat.params))
    except (QuotaError, exceptions.APIException) as exc:
        return _refusal(exc, request)
    call = metered.call
    setattr(request, DECISION_ATTR, call.decision)
    setattr(request, LIMITS_ATTR, call.quota.named_limits())
    headers = {DOWNGRADE_HEADER: call.requested_model} if call.downgraded else {}
    forward = call.provider_request(chat.params)
    if chat.stream:
        return await _stream(request, forward, metered, headers)
    started = time.monotonic()
    try:
        reply = await upstream.achat(forward, call.served.provider)
    except UPSTREAM_ERRORS as exc:
        await _to_the_end(metered.refund())
        return await _provider_failed(request, exc, call.model)
    except asyncio.CancelledError:
        await _to_the_end(metered.settle(completion_text=""))  # the prompt was sent
        raise
    usage, text = reply.get("usage"), _completion_text(reply)
    reply["model"] = call.model

    async def settle() -> None:
        used = await _to_the_end(metered.settle(usage, completion_text=text))
        logger.info(
            "quotas: user %s model %s tokens %s+%s in %.0f ms",
            call.user_id,
            call.model,
            used.prompt_tokens,
            used.completion_tokens,
            (time.monotonic() - started) * 1000,
        )

    # Django's ASGI handler closes the response once its body is sent: settled then, on
    # this event loop (the close runs in a worker thread).
    answer = SettledJsonResponse(reply, settle=async_to_sync(settle), headers=headers)
    return _finish(request, answer)


async def _provider_failed(request: HttpRequest, exc: Exception, model: str) -> HttpResponse:
    # A provider 429 records its backoff in Redis: in a worker thread.
    return _finish(request, _json(await in_orm_thread(upstream_error)(exc, model)))


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
        self.provider = await upstream.achat_stream(params, self.metered.call.served.provider)
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


# the reading endpoints: they charge none of the caller's limits -----------------------


def _models(request: HttpRequest) -> HttpResponse:
    quota = caller_quota(request)
    names = caller_models(quota, policy.model_catalogue())
    try:
        headers = usage_headers(read_usage(request.user, quota), quota)
    except CountersUnavailable:  # the list does not need the counters
        headers = {}
    body = {"object": "list", "data": [model_object(name) for name in names]}
    return JsonResponse(body, headers=headers)


def _quota(request: HttpRequest) -> HttpResponse:
    quota = caller_quota(request)
    try:
        decision = read_usage(request.user, quota)
    except CountersUnavailable:
        return _json(counters_unavailable())
    report = quota_report(quota, decision)
    report["usage"]["today"].update(token_details(request.user.pk, decision.day))
    report["usage"]["this_month"].update(token_details(request.user.pk, decision.month))
    return JsonResponse(report, headers=usage_headers(decision, quota))


async def _reading(
    request: HttpRequest, answer: Callable[[HttpRequest], HttpResponse]
) -> HttpResponse:
    if request.method not in ("GET", "HEAD"):
        return _refusal(exceptions.MethodNotAllowed(str(request.method)), request)
    try:
        await _caller(request)
        # The quota, the catalogue and the usage: short, in a worker thread.
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
