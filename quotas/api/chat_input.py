"""Checking a Chat Completions request body for shape, before the call is planned."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from ..exceptions import InvalidRequest

ROLES = {"system", "developer", "user", "assistant", "tool", "function"}
NUMBER_PARAMS = ("temperature", "top_p", "presence_penalty", "frequency_penalty")


@dataclass
class ChatRequest:
    params: dict[str, Any]  # the body's parameters, checked for shape
    stream: bool


# Deeper JSON than this is refused before anything reads it (json schemas nest, but not so).
MAX_DEPTH = 128


def _not_finite(constant: str) -> Any:
    raise ValueError(f"{constant} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of range")
    return value


def _check_nesting(body: bytes) -> None:
    """Refuse JSON nested more than MAX_DEPTH levels, counting brackets outside strings."""
    depth = 0
    in_string = escaped = False
    for byte in body:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            if depth > MAX_DEPTH:
                raise InvalidRequest(
                    f"The JSON body is nested more than {MAX_DEPTH} levels deep.",
                    code="invalid_json",
                )
        elif byte in (0x5D, 0x7D):
            depth -= 1


def _check_text(value: Any, where: str = "") -> None:
    """Every string must be encodable as UTF-8 (a lone surrogate such as \\ud800 is not)."""
    stack: list[tuple[Any, str]] = [(value, where)]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str):
            try:
                item.encode()
            except UnicodeEncodeError:
                raise InvalidRequest(
                    f"'{path or 'body'}' holds a lone UTF-16 surrogate; send valid Unicode text.",
                    path or None,
                    "invalid_json",
                ) from None
        elif isinstance(item, dict):
            for key, child in item.items():
                stack.append((key, path))
                stack.append((child, f"{path}.{key}" if path else str(key)))
        elif isinstance(item, list):
            stack.extend((child, f"{path}[{i}]") for i, child in enumerate(item))


def parse_body(body: bytes) -> dict[str, Any]:
    """The request body as a JSON object, or InvalidRequest (400 invalid_json)."""
    _check_nesting(body or b"")
    try:
        data = json.loads(body or b"", parse_constant=_not_finite, parse_float=_finite)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise InvalidRequest(
            "We could not parse the JSON body of your request. Send valid JSON "
            "(finite numbers, UTF-8 text).",
            code="invalid_json",
        ) from None
    if not isinstance(data, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_json")
    _check_text(data)
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


def parse_chat_request(data: dict[str, Any]) -> ChatRequest:
    """Check the shape of a Chat Completions body; the tier's rules come after."""
    _check_messages(data.get("messages"))

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
    tools = data.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise InvalidRequest("'tools' must be an array.", "tools", "invalid_type")
    n = data.get("n")
    if n is not None and not (isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= 16):
        raise InvalidRequest("'n' must be an integer from 1 to 16.", "n", "invalid_value")
    return ChatRequest(dict(data), stream)
