"""POST /v1/embeddings: reserved as the counted input, settled from the provider's usage."""

from __future__ import annotations

from typing import Any

from rest_framework.request import Request
from rest_framework.response import Response

from .. import calls, embeddings, upstream
from ..authentication import request_key
from ..throttling import DECISION_ATTR, LIMITS_ATTR
from .chat_input import parse_body
from .forwarding import UPSTREAM_ERRORS, read_body, upstream_error
from .views import CallerAPIView


class EmbeddingsView(CallerAPIView):
    """OpenAI embeddings behind the caller's quota: reserve the input's tokens, call, settle."""

    throttle_classes: list[Any] = []  # the reservation itself applies the request limits
    parser_classes: list[Any] = []  # the raw body is read and checked here

    def post(self, request: Request) -> Response:
        body = parse_body(read_body(request))
        call = calls.reserve(
            request.user, key=request_key(request), **embeddings.reserve_arguments(body)
        )
        setattr(request._request, DECISION_ATTR, call.decision)
        setattr(request._request, LIMITS_ATTR, call.quota.named_limits())
        try:
            reply = upstream.embeddings({**body, "model": call.model}, call.served.provider)
        except UPSTREAM_ERRORS as exc:
            call.refund()
            return upstream_error(exc, call.model)
        call.settle(reply.get("usage"))
        return Response(reply)
