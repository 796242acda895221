"""OpenAPI descriptions for drf-spectacular: the API-key scheme and the `/v1/` wire format.

The `/v1/` views read raw JSON in OpenAI's shape rather than through serializers, so their
request and response bodies are described here, for documentation only.
"""

from __future__ import annotations

from typing import Any, cast

from drf_spectacular.extensions import OpenApiAuthenticationExtension, OpenApiViewExtension
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import serializers

S = serializers


class APIKeyScheme(OpenApiAuthenticationExtension):
    target_class = "quotas.authentication.APIKeyAuthentication"
    name = "apiKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "A user's API key: `Authorization: Bearer <prefix>.<secret>`.",
        }


class ErrorDetail(S.Serializer[dict[str, Any]]):
    message = S.CharField()
    type = S.CharField()
    param = S.CharField(allow_null=True)
    code = S.CharField(allow_null=True)


class Error(S.Serializer[dict[str, Any]]):
    error = ErrorDetail()


class Message(S.Serializer[dict[str, Any]]):
    role = S.ChoiceField(["system", "developer", "user", "assistant", "tool"])
    content = S.JSONField(help_text="A string, or a list of content parts.")


class ChatRequest(S.Serializer[dict[str, Any]]):
    model = S.CharField(required=False, help_text="Empty: the tier's default model.")
    messages = Message(many=True)
    max_tokens = S.IntegerField(required=False, help_text="Capped by the tier.")
    max_completion_tokens = S.IntegerField(required=False)
    n = S.IntegerField(required=False, default=1)
    temperature = S.FloatField(required=False)
    stream = S.BooleanField(required=False, default=False, help_text="Server-sent events.")
    stream_options = S.JSONField(required=False)


class Usage(S.Serializer[dict[str, Any]]):
    prompt_tokens = S.IntegerField()
    completion_tokens = S.IntegerField()
    total_tokens = S.IntegerField()


class Choice(S.Serializer[dict[str, Any]]):
    index = S.IntegerField()
    message = Message()
    finish_reason = S.CharField(allow_null=True)


class ChatCompletion(S.Serializer[dict[str, Any]]):
    id = S.CharField()
    object = S.CharField(default="chat.completion")
    created = S.IntegerField()
    model = S.CharField(help_text="The model that served: the fallback when degraded.")
    choices = Choice(many=True)
    usage = Usage()


class Model(S.Serializer[dict[str, Any]]):
    id = S.CharField()
    object = S.CharField(default="model")
    created = S.IntegerField()
    owned_by = S.CharField()


class ModelList(S.Serializer[dict[str, Any]]):
    object = S.CharField(default="list")
    data = Model(many=True)  # type: ignore[assignment]  # a field; the metaclass pops it


class QuotaReport(S.Serializer[dict[str, Any]]):
    object = S.CharField(default="quota")
    tier = S.DictField(help_text="slug and name")
    blocked = S.BooleanField()
    time_zone = S.CharField()
    limits = S.DictField(
        help_text="Per limit: limit, used, remaining, reset_seconds, resets_at "
        "(a rate per minute with its burst; spend in USD strings)."
    )
    usage = S.DictField(help_text="today and this_month: period, requests, tokens, spend.")
    models = S.DictField(help_text="allowed, default, fallback, degrade_at_percent.")


READ_ERRORS = {
    401: OpenApiResponse(Error, description="Missing or wrong API key."),
    403: OpenApiResponse(
        Error, description="The user's quota is blocked, or no tier applies (no default tier)."
    ),
    503: OpenApiResponse(Error, description="Quota counters unavailable."),
}
ERRORS = {
    **READ_ERRORS,
    429: OpenApiResponse(
        Error,
        description="A limit is reached; see Retry-After. A budget (insufficient_quota) "
        "also says x-should-retry: false.",
    ),
}


def _described(target: str | type[object] | None, **methods: Any) -> type:
    """A subclass of `target` carrying the schema, leaving the served view untouched."""
    view = cast(type, target)  # an extension's target_class, imported by drf-spectacular by now
    return extend_schema_view(**methods)(type(view.__name__, (view,), {}))


class ChatCompletionsSchema(OpenApiViewExtension):
    target_class = "quotas.api.chat.ChatCompletionsView"

    def view_replacement(self) -> type:
        responses: dict[Any, Any] = {
            200: ChatCompletion,
            (200, "text/event-stream"): OpenApiResponse(
                OpenApiTypes.STR, description="With stream: chunks as server-sent events."
            ),
            400: OpenApiResponse(Error, description="Invalid request or model not allowed."),
            413: OpenApiResponse(Error, description="Body too large."),
            502: OpenApiResponse(Error, description="The provider failed."),
            504: OpenApiResponse(Error, description="The provider timed out."),
            **ERRORS,
        }
        post = extend_schema(
            summary="Create a chat completion (OpenAI-compatible)",
            request=ChatRequest,
            responses=responses,
        )
        return _described(self.target_class, post=post)


class ModelsSchema(OpenApiViewExtension):
    target_class = "quotas.api.chat.ModelsView"

    def view_replacement(self) -> type:
        get = extend_schema(
            summary="The models the caller's tier may use (charges no limit)",
            responses={200: ModelList, **READ_ERRORS},
        )
        return _described(self.target_class, get=get)


class QuotaSchema(OpenApiViewExtension):
    target_class = "quotas.api.views.QuotaView"

    def view_replacement(self) -> type:
        get = extend_schema(
            summary="The caller's limits, usage, remaining and reset times (charges no limit)",
            responses={200: QuotaReport, **READ_ERRORS},
        )
        return _described(self.target_class, get=get)


class ResponseRequest(S.Serializer[dict[str, Any]]):
    model = S.CharField(required=False, help_text="Empty: the tier's default model.")
    input = S.JSONField(help_text="A string, or a list of input items.")
    instructions = S.CharField(required=False)
    max_output_tokens = S.IntegerField(required=False, help_text="Capped by the tier.")
    tools = S.JSONField(required=False, help_text="Counted in the reserved estimate.")
    stream = S.BooleanField(required=False, default=False, help_text="The Responses events.")


class EmbeddingRequest(S.Serializer[dict[str, Any]]):
    model = S.CharField()
    input = S.JSONField(help_text="A string, strings, a token array or token arrays.")
    dimensions = S.IntegerField(required=False)
    encoding_format = S.ChoiceField(["float", "base64"], required=False, default="float")


PROVIDER_ERRORS = {
    400: OpenApiResponse(Error, description="Invalid request or model not allowed."),
    413: OpenApiResponse(Error, description="Body too large."),
    502: OpenApiResponse(Error, description="The provider failed."),
    504: OpenApiResponse(Error, description="The provider timed out."),
    **ERRORS,
}


class ResponsesSchema(OpenApiViewExtension):
    target_class = "quotas.api.responses.ResponsesView"

    def view_replacement(self) -> type:
        responses: dict[Any, Any] = {
            200: OpenApiResponse(OpenApiTypes.OBJECT, description="A response object."),
            (200, "text/event-stream"): OpenApiResponse(
                OpenApiTypes.STR, description="With stream: the Responses events."
            ),
            **PROVIDER_ERRORS,
        }
        post = extend_schema(
            summary="Create a model response (OpenAI Responses API)",
            request=ResponseRequest,
            responses=responses,
        )
        return _described(self.target_class, post=post)


class EmbeddingsSchema(OpenApiViewExtension):
    target_class = "quotas.api.embeddings.EmbeddingsView"

    def view_replacement(self) -> type:
        post = extend_schema(
            summary="Create embeddings (OpenAI-compatible)",
            request=EmbeddingRequest,
            responses={
                200: OpenApiResponse(OpenApiTypes.OBJECT, description="The embeddings."),
                **PROVIDER_ERRORS,
            },
        )
        return _described(self.target_class, post=post)


class ModelSchema(OpenApiViewExtension):
    target_class = "quotas.api.catalogue.ModelView"

    def view_replacement(self) -> type:
        get = extend_schema(
            operation_id="v1_model_retrieve",
            summary="One model the caller's tier may use",
            responses={200: Model, 404: OpenApiResponse(Error, description="model_not_found")},
        )
        return _described(self.target_class, get=get)
