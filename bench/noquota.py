"""/v1/chat/completions with the quota path taken out, as the end-to-end baseline.

The same authentication, request checks, model catalogue and provider call as the real
view; no policy, token count, reservation, provider limiter, settlement or ledger row.
"""

from __future__ import annotations

from typing import Any

from rest_framework.request import Request
from rest_framework.response import Response

from quotas import planning, policy, upstream
from quotas.api.chat_input import parse_body, parse_chat_request
from quotas.api.errors import error_response
from quotas.api.views import CallerAPIView
from quotas.exceptions import InvalidRequest

UNMETERED = policy.Quota(tier_slug="unmetered", tier_name="Unmetered")


class UnmeteredChatView(CallerAPIView):
    throttle_classes: list[Any] = []
    parser_classes: list[Any] = []

    def post(self, request: Request) -> Any:
        try:
            data = parse_body(request._request.body)
            params = parse_chat_request(data).params
            model = planning.choose_model(UNMETERED, policy.model_catalogue(), params.get("model"))
            cap, param = planning.output_cap(
                UNMETERED, params.pop("max_tokens", None), params.pop("max_completion_tokens", None)
            )
        except InvalidRequest as exc:
            return error_response(400, exc.message, "invalid_request_error", exc.code, exc.param)
        try:
            reply = upstream.chat({**params, "model": model.name, param: cap})
        except upstream.UpstreamError as exc:
            return error_response(502, exc.message, "server_error", "upstream_error")
        return Response(reply)
