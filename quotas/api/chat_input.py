"""Checking a Chat Completions request body before anything is reserved or called."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..conf import conf
from ..models import AIModel
from ..policy import Quota

ROLES = {"system", "developer", "user", "assistant", "tool", "function"}
NUMBER_PARAMS = ("temperature", "top_p", "presence_penalty", "frequency_penalty")


class InvalidRequest(Exception):
    """A 400 naming the offending parameter."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


@dataclass
class ChatRequest:
    params: dict[str, Any]  # what is sent to the provider (model and max_tokens filled in)
    model: AIModel
    max_tokens: int
    choices: int
    stream: bool


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_body(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body or b"")
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequest(
            "We could not parse the JSON body of your request. Send valid JSON.",
            code="invalid_json",
        ) from None
    if not isinstance(data, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_json")
    return data


def _check_messages(messages: Any) -> None:
    if messages is None:
        raise InvalidRequest("Missing required parameter: 'messages'.", "messages", "missing")
    if not isinstance(messages, list):
        raise InvalidRequest("'messages' must be an array.", "messages", "invalid_type")
    if not messages:
        raise InvalidRequest("'messages' must not be empty.", "messages", "empty_array")
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise InvalidRequest(f"'{where}' must be an object.", where, "invalid_type")
        role = message.get("role")
        if role not in ROLES:
            raise InvalidRequest(
                f"'{where}.role' must be one of {', '.join(sorted(ROLES))}.",
                f"{where}.role",
                "invalid_value",
            )
        content = message.get("content")
        if content is None and role == "assistant" and message.get("tool_calls"):
            continue
        if isinstance(content, str):
            continue
        if isinstance(content, list) and all(
            isinstance(part, dict) and isinstance(part.get("type"), str) for part in content
        ):
            continue
        raise InvalidRequest(
            f"'{where}.content' must be a string or an array of content parts.",
            f"{where}.content",
            "invalid_type",
        )


def parse_chat_request(
    data: dict[str, Any], quota: Quota, catalogue: dict[str, AIModel]
) -> ChatRequest:
    """Validate `data` against the caller's quota and the model catalogue."""
    _check_messages(data.get("messages"))

    name = data.get("model") or quota.default_model
    if name is None:
        raise InvalidRequest("Missing required parameter: 'model'.", "model", "missing")
    if not isinstance(name, str):
        raise InvalidRequest("'model' must be a string.", "model", "invalid_type")
    model = catalogue.get(name)
    if model is None:
        raise InvalidRequest(f"The model '{name}' does not exist.", "model", "model_not_found")
    if quota.allowed_models and name not in quota.allowed_models:
        raise InvalidRequest(
            f"Your tier does not allow the model '{name}'; allowed: "
            f"{', '.join(quota.allowed_models)}.",
            "model",
            "model_not_allowed",
        )

    param = "max_completion_tokens" if "max_completion_tokens" in data else "max_tokens"
    max_tokens = data.get(param)
    cap = quota.max_tokens_per_request
    if max_tokens is None:
        max_tokens = conf.DEFAULT_MAX_TOKENS if cap is None else min(conf.DEFAULT_MAX_TOKENS, cap)
    elif not _is_int(max_tokens) or max_tokens < 1:
        raise InvalidRequest(f"'{param}' must be a positive integer.", param, "invalid_value")
    elif cap is not None and max_tokens > cap:
        raise InvalidRequest(
            f"'{param}' is {max_tokens}, over your tier's limit of {cap} tokens per request.",
            param,
            "max_tokens_exceeded",
        )

    choices = data.get("n", 1)
    if choices is None:
        choices = 1
    if not _is_int(choices) or not 1 <= choices <= 16:
        raise InvalidRequest("'n' must be an integer from 1 to 16.", "n", "invalid_value")

    stream = data.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise InvalidRequest("'stream' must be a boolean.", "stream", "invalid_type")
    options = data.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise InvalidRequest(
            "'stream_options' must be an object.", "stream_options", "invalid_type"
        )

    for key in NUMBER_PARAMS:
        value = data.get(key)
        if value is not None and (not isinstance(value, int | float) or isinstance(value, bool)):
            raise InvalidRequest(f"'{key}' must be a number.", key, "invalid_type")
    stop = data.get("stop")
    if stop is not None and not (
        isinstance(stop, str) or (isinstance(stop, list) and all(isinstance(s, str) for s in stop))
    ):
        raise InvalidRequest(
            "'stop' must be a string or an array of strings.", "stop", "invalid_type"
        )
    user = data.get("user")
    if user is not None and not isinstance(user, str):
        raise InvalidRequest("'user' must be a string.", "user", "invalid_type")

    params = dict(data)
    params.update({"model": name, param: max_tokens})
    return ChatRequest(params, model, max_tokens, choices, stream)
