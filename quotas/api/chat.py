"""POST /v1/chat/completions and GET /v1/models, OpenAI's wire format."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from typing import Any

from rest_framework.request import Request
from rest_framework.response import Response

from .. import calls, policy, upstream
from ..authentication import request_key
from ..engine import CountersUnavailable
from ..throttling import DECISION_ATTR, LIMITS_ATTR
from .chat_input import parse_body, parse_chat_request
from .errors import error_body
from .forwarding import (
    DOWNGRADE_HEADER,
    UPSTREAM_ERRORS,
    event_stream,
    read_body,
    upstream_error,
)
from .settlement import SettledResponse
from .views import CallerAPIView, caller_quota, read_usage, usage_headers

logger = logging.getLogger("quotas")


def _completion_text(reply: dict[str, Any]) -> str:
    parts = []
    for choice in reply.get("choices") or []:
        message = choice.get("message") or {}
        if isinstance(message.get("content"), str):
            parts.append(message["content"])
    return "".join(parts)


class StreamSettlement:
    """The SSE body of a streamed completion; settles when exhausted or closed.

    Django calls `close()` when the response ends, including when the client goes away
    before or during the stream, so the lease is always released and what was delivered
    is charged.
    """

    def __init__(
        self, chunks: Iterator[dict[str, Any]], call: calls.MeteredCall, include_usage: bool
    ) -> None:
        self.chunks = chunks
        self.call = call
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
                chunk["model"] = self.call.model
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
        self.call.settle(self.usage, completion_text="".join(self.delivered))


class ChatCompletionsView(CallerAPIView):
    """OpenAI Chat Completions behind the caller's quota: reserve, call, settle."""

    throttle_classes: list[Any] = []  # the reservation itself applies the request limits
    parser_classes: list[Any] = []  # the raw body is read and checked here

    def post(self, request: Request) -> Any:
        chat = parse_chat_request(parse_body(read_body(request)))
        body = chat.params
        call = calls.reserve(
            request.user, key=request_key(request), **calls.reserve_arguments(body)
        )
        setattr(request._request, DECISION_ATTR, call.decision)
        setattr(request._request, LIMITS_ATTR, call.quota.named_limits())
        headers = {DOWNGRADE_HEADER: call.requested_model} if call.downgraded else {}
        forward = call.provider_request(body)
        if chat.stream:
            return self._stream(forward, call, headers)
        started = time.monotonic()
        try:
            reply = upstream.chat(forward, call.served.provider)
        except UPSTREAM_ERRORS as exc:
            call.refund()
            return upstream_error(exc, call.model)
        reply["model"] = call.model
        usage, text, user_id = reply.get("usage"), _completion_text(reply), request.user.pk

        def settle() -> None:
            used = call.settle(usage, completion_text=text)
            logger.info(
                "quotas: user %s model %s tokens %s+%s in %.0f ms",
                user_id,
                call.model,
                used.prompt_tokens,
                used.completion_tokens,
                (time.monotonic() - started) * 1000,
            )

        # Settled once the answer is sent: until then the reservation stands charged.
        return SettledResponse(reply, settle=settle, headers=headers)

    def _stream(
        self, params: dict[str, Any], call: calls.MeteredCall, headers: dict[str, str]
    ) -> Any:
        options = params.get("stream_options") or {}
        include_usage = bool(options.get("include_usage"))
        params["stream_options"] = {**options, "include_usage": True}
        try:
            chunks = upstream.chat_stream(params, call.served.provider)
            first = next(chunks, None)
        except UPSTREAM_ERRORS as exc:
            call.refund()
            return upstream_error(exc, call.model)

        def replay() -> Iterator[dict[str, Any]]:
            if first is not None:
                yield first
            yield from chunks

        return event_stream(StreamSettlement(replay(), call, include_usage), headers, self.request)


class ModelsView(CallerAPIView):
    """GET /v1/models: the models the caller's tier may use. Reading it charges nothing."""

    throttle_classes: list[Any] = []

    def get(self, request: Request) -> Response:
        quota = caller_quota(request)
        catalogue = policy.model_catalogue()
        names = [n for n in quota.allowed_models if n in catalogue] or sorted(catalogue)
        created = int(time.time())
        data = [
            {"id": name, "object": "model", "created": created, "owned_by": "django-ai-quotas"}
            for name in names
        ]
        try:
            headers = usage_headers(read_usage(request.user, quota), quota)
        except CountersUnavailable:  # the list does not need the counters
            headers = {}
        return Response({"object": "list", "data": data}, headers=headers)
