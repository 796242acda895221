"""POST /v1/chat/completions and GET /v1/models, OpenAI's wire format."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.http import StreamingHttpResponse
from rest_framework.request import Request
from rest_framework.response import Response

from .. import policy, upstream
from ..conf import conf
from ..counters import get_engine
from ..degradation import serving_model
from ..engine import CountersUnavailable, Decision
from ..models import AIModel
from ..services import Grant, service
from ..throttling import DECISION_ATTR, TierRateThrottle
from ..tokens import count_prompt_tokens, count_text_tokens
from .chat_input import InvalidRequest, parse_body, parse_chat_request
from .errors import counters_unavailable, denial_response, error_body, error_response
from .views import CallerAPIView

logger = logging.getLogger("quotas")

DOWNGRADE_HEADER = "X-Quota-Downgraded-From"


def _completion_text(reply: dict[str, Any]) -> str:
    parts = []
    for choice in reply.get("choices") or []:
        message = choice.get("message") or {}
        if isinstance(message.get("content"), str):
            parts.append(message["content"])
    return "".join(parts)


def _usage(usage: Any, prompt: int, completion_text: str, model: str) -> tuple[int, int]:
    """(prompt, completion) tokens: the provider's figures, else our own count."""
    if isinstance(usage, dict):
        p, c = usage.get("prompt_tokens"), usage.get("completion_tokens")
        if isinstance(p, int) and isinstance(c, int) and p >= 0 and c >= 0:
            return p, c
    return prompt, count_text_tokens(completion_text, model)


def _upstream_error(exc: Exception, model: str) -> Response:
    if isinstance(exc, upstream.UpstreamTimeout):
        return error_response(504, "The model provider timed out.", "server_error", "timeout")
    if isinstance(exc, upstream.UpstreamRateLimited):
        wait = max(1, int(exc.retry_after or 1))
        upstream.UpstreamLimiter(get_engine()).backoff(model, float(wait))
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


UPSTREAM_ERRORS = (upstream.UpstreamTimeout, upstream.UpstreamRateLimited, upstream.UpstreamError)


class StreamSettlement:
    """The SSE body of a streamed completion; settles when exhausted or closed.

    Django calls `close()` when the response ends, including when the client goes away
    before or during the stream, so the lease is always released and what was delivered
    is charged.
    """

    def __init__(
        self,
        chunks: Iterator[dict[str, Any]],
        grant: Grant,
        model: AIModel,
        prompt_tokens: int,
        include_usage: bool,
    ) -> None:
        self.chunks = chunks
        self.grant = grant
        self.model = model
        self.prompt_tokens = prompt_tokens
        self.include_usage = include_usage
        self.delivered: list[str] = []
        self.usage: Any = None
        self.settled = False

    def __iter__(self) -> Iterator[bytes]:
        try:
            for chunk in self.chunks:
                if chunk.get("usage"):
                    self.usage = chunk["usage"]
                for choice in chunk.get("choices") or []:
                    content = (choice.get("delta") or {}).get("content")
                    if isinstance(content, str):
                        self.delivered.append(content)
                chunk["model"] = self.model.name
                if not chunk.get("choices") and chunk.get("usage") and not self.include_usage:
                    continue
                yield f"data: {json.dumps(chunk)}\n\n".encode()
            end = b"data: [DONE]\n\n"
        except UPSTREAM_ERRORS as exc:
            body = error_body(f"The model provider failed mid-stream: {exc}", "server_error")
            end = f"data: {json.dumps(body)}\n\n".encode()
        finally:
            self.close()
        # Settled before the client reads the end, so its next request finds the lease free.
        yield end

    def close(self) -> None:
        if self.settled:
            return
        self.settled = True
        close = getattr(self.chunks, "close", None)
        if close is not None:
            try:
                close()
            except Exception:  # the provider's connection is going away anyway
                logger.debug("quotas: closing the provider stream failed", exc_info=True)
        prompt, completion = _usage(
            self.usage, self.prompt_tokens, "".join(self.delivered), self.model.name
        )
        service.settle(
            self.grant,
            prompt_tokens=prompt,
            completion_tokens=completion,
            cost=self.model.cost_micros(prompt, completion),
            model=self.model.name,
        )


class ChatCompletionsView(CallerAPIView):
    """OpenAI Chat Completions behind the caller's quota: reserve, call, settle."""

    throttle_classes: list[Any] = []  # the reservation itself applies the request limits
    parser_classes: list[Any] = []  # the raw body is read and checked here

    def post(self, request: Request) -> Any:
        raw = request._request
        try:
            length = int(raw.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        limit = conf.MAX_REQUEST_BYTES

        def too_big() -> Response:
            return error_response(
                413,
                f"The request body is larger than {limit} bytes.",
                "invalid_request_error",
                "request_too_large",
            )

        if length > limit:
            return too_big()
        try:
            body = raw.body
        except RequestDataTooBig:
            return too_big()
        if len(body) > limit:
            return too_big()

        quota = policy.quota_for_user(request.user)
        if quota.blocked:
            return error_response(
                403, "This account's quota is blocked.", "permission_error", "blocked"
            )
        catalogue = policy.model_catalogue()
        try:
            chat = parse_chat_request(parse_body(body), quota, catalogue)
        except InvalidRequest as exc:
            return error_response(400, exc.message, "invalid_request_error", exc.code, exc.param)

        prompt_tokens = count_prompt_tokens(chat.params["messages"], chat.model.name)
        completion_budget = chat.max_tokens * chat.choices
        worst = prompt_tokens + completion_budget
        for name in ("tokens_per_day", "tokens_per_month"):
            cap = getattr(quota, name)
            if cap is not None and worst > cap:
                return error_response(
                    400,
                    f"This request needs up to {worst} tokens ({prompt_tokens} prompt + "
                    f"{completion_budget} completion), more than your whole {name} "
                    f"of {cap}. Shorten the messages or lower max_tokens.",
                    "invalid_request_error",
                    "context_length_exceeded",
                    "messages",
                )

        def reserve(
            model: AIModel, spend: int, record_denial: bool = True
        ) -> tuple[Decision, Grant | None]:
            # The model's provider backoff is read in the same round trip.
            return service.reserve(
                request.user.pk,
                quota,
                model=model.name,
                tokens=worst,
                spend=spend,
                record_denial=record_denial,
                watch=(upstream.subject(model.name),),
            )

        try:
            served = chat.model
            spend = served.cost_micros(prompt_tokens, completion_budget)
            fallback = catalogue.get(quota.fallback_model or "")
            can_degrade = bool(quota.degrade_at_percent and fallback and fallback != served)
            decision, grant = reserve(served, spend, record_denial=not can_degrade)
            charged = {"dt": worst, "dr": 1, "ms": spend}
            if can_degrade and serving_model(quota, served.name, decision, charged) != served.name:
                # Running low: give this back and take the cheaper fallback's price instead.
                if grant is not None:
                    service.refund(grant)
                served = fallback
                spend = served.cost_micros(prompt_tokens, completion_budget)
                decision, grant = reserve(served, spend)
            elif can_degrade and grant is None:
                service.record_denial(request.user.pk, decision, served.name)
        except CountersUnavailable:
            logger.error("quotas: Redis unreachable; refusing a chat completion")
            return counters_unavailable()
        setattr(raw, DECISION_ATTR, decision)
        if grant is None:
            return denial_response(decision)
        extra_headers = {}
        if served.name != chat.model.name:
            extra_headers[DOWNGRADE_HEADER] = chat.model.name

        try:
            if upstream.needs_limiter(served, decision.watched_hold):
                upstream.UpstreamLimiter(get_engine()).acquire(
                    served.name,
                    served.upstream_requests_per_minute,
                    served.upstream_tokens_per_minute,
                    worst,
                    conf.UPSTREAM_MAX_WAIT,
                )
        except upstream.UpstreamBusy as exc:
            service.refund(grant)
            wait = max(1, int(exc.retry_after + 0.999))
            return error_response(
                503,
                f"The model '{served.name}' is at the provider's limit; retry after {wait} s.",
                "server_error",
                "upstream_busy",
                headers={"Retry-After": str(wait), **extra_headers},
            )
        except CountersUnavailable:
            pass  # the provider's own limits still apply on its side

        params = {**chat.params, "model": served.name}
        if chat.stream:
            return self._stream(params, chat, grant, served, prompt_tokens, extra_headers)

        started = time.monotonic()
        try:
            reply = upstream.chat(params)
        except UPSTREAM_ERRORS as exc:
            service.refund(grant)
            return _upstream_error(exc, served.name)
        prompt, completion = _usage(
            reply.get("usage"), prompt_tokens, _completion_text(reply), served.name
        )
        service.settle(
            grant,
            prompt_tokens=prompt,
            completion_tokens=completion,
            cost=served.cost_micros(prompt, completion),
            model=served.name,
        )
        reply["model"] = served.name
        logger.info(
            "quotas: user %s model %s tokens %s+%s in %.0f ms",
            request.user.pk,
            served.name,
            prompt,
            completion,
            (time.monotonic() - started) * 1000,
        )
        return Response(reply, headers=extra_headers)

    def _stream(
        self,
        params: dict[str, Any],
        chat: Any,
        grant: Grant,
        served: AIModel,
        prompt_tokens: int,
        extra_headers: dict[str, str],
    ) -> Any:
        options = params.get("stream_options") or {}
        include_usage = bool(options.get("include_usage"))
        params["stream_options"] = {**options, "include_usage": True}
        try:
            chunks = upstream.chat_stream(params)
            first = next(chunks, None)
        except UPSTREAM_ERRORS as exc:
            service.refund(grant)
            return _upstream_error(exc, served.name)

        def replay() -> Iterator[dict[str, Any]]:
            if first is not None:
                yield first
            yield from chunks

        body = StreamSettlement(replay(), grant, served, prompt_tokens, include_usage)
        response = StreamingHttpResponse(body, content_type="text/event-stream")
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"
        for name, value in extra_headers.items():  # the rate-limit headers: finalize_response
            response[name] = value
        return response


class ModelsView(CallerAPIView):
    """GET /v1/models: the models the caller's tier may use."""

    throttle_classes = [TierRateThrottle]

    def get(self, request: Request) -> Response:
        quota = policy.quota_for_user(request.user)
        catalogue = policy.model_catalogue()
        names = [n for n in quota.allowed_models if n in catalogue] or sorted(catalogue)
        created = int(time.time())
        data = [
            {"id": name, "object": "model", "created": created, "owned_by": "django-ai-quotas"}
            for name in names
        ]
        return Response({"object": "list", "data": data})
