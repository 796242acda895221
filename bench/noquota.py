"""/v1/chat/completions with the quota path taken out, as the end-to-end baseline.

The same authentication, request checks, model catalogue and provider call as the real
view; no policy, token count, reservation, provider limiter, settlement or ledger row.
"""

from __future__ import annotations

from typing import Any

from rest_framework.request import Request
from rest_framework.response import Response

from quotas import policy, upstream
from quotas.api.chat_input import InvalidRequest, parse_body, parse_chat_request
from quotas.api.errors import error_response
from quotas.api.views import CallerAPIView

UNMETERED = policy.Quota(tier_slug="unmetered", tier_name="Unmetered")


class UnmeteredChatView(CallerAPIView):
    throttle_classes: list[Any] = []
    parser_classes: list[Any] = []

    def post(self, request: Request) -> Any:
        try:
            data = parse_body(request._request.body)
            chat = parse_chat_request(data, UNMETERED, policy.model_catalogue())
        except InvalidRequest as exc:
            return error_response(400, exc.message, "invalid_request_error", exc.code, exc.param)
        try:
            reply = upstream.chat({**chat.params, "model": chat.model.name})
        except upstream.UpstreamError as exc:
            return error_response(502, exc.message, "server_error", "upstream_error")
        return Response(reply)
