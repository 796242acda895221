"""GET /v1/models/{id}: one model the caller's tier may use."""

from __future__ import annotations

import time

from rest_framework.request import Request
from rest_framework.response import Response

from .. import policy
from ..engine import CountersUnavailable
from ..models import AIModel
from .errors import error_response
from .views import CallerAPIView, caller_quota, read_usage, usage_headers


def caller_models(quota: policy.Quota, catalogue: dict[str, AIModel]) -> list[str]:
    """The models a quota may use: its tier's allowed ones in the catalogue, else all."""
    return [n for n in quota.allowed_models if n in catalogue] or sorted(catalogue)


def model_object(name: str) -> dict[str, object]:
    return {
        "id": name,
        "object": "model",
        "created": int(time.time()),
        "owned_by": "django-ai-quotas",
    }


class ModelView(CallerAPIView):
    """GET /v1/models/{id}: the model, or a 404 `model_not_found` if the tier may not use it.
    Reading it charges nothing."""

    throttle_classes: list[type] = []

    def get(self, request: Request, model: str) -> Response:
        quota = caller_quota(request)
        if model not in caller_models(quota, policy.model_catalogue()):
            return error_response(
                404,
                f"The model '{model}' does not exist or you do not have access to it.",
                "invalid_request_error",
                "model_not_found",
                "model",
            )
        try:
            headers = usage_headers(read_usage(request.user, quota), quota)
        except CountersUnavailable:  # the answer does not need the counters
            headers = {}
        return Response(model_object(model), headers=headers)
