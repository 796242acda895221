"""An embeddings call under the caller's quota: its input counted, reserved exactly, settled.

Embeddings bill input tokens only, and the input is known in full before the call: the
reservation is that count (no output cap), and the provider's `usage.prompt_tokens`
settles it.
"""

from __future__ import annotations

from typing import Any

from .exceptions import InvalidRequest
from .tokens import count_text_tokens

# OpenAI's bound on the inputs of one request.
MAX_INPUTS = 2048
ENCODING_FORMATS = ("float", "base64")


def _is_token(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_tokens(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(_is_token(t) for t in value)


def inputs(value: Any) -> list[str | list[int]]:
    """The inputs of an `input` parameter: a string, strings, a token array or token arrays.

    Raises InvalidRequest naming `input` for anything else, or an empty input.
    """
    if value is None:
        raise InvalidRequest("Missing required parameter: 'input'.", "input", "missing")
    if isinstance(value, str):
        items: list[Any] = [value]
    elif _is_tokens(value):
        items = [value]
    elif isinstance(value, list) and value:
        items = value
    else:
        raise InvalidRequest(
            "'input' must be a string, an array of strings, an array of tokens or an array "
            "of token arrays, and not empty.",
            "input",
            "invalid_type",
        )
    if len(items) > MAX_INPUTS:
        raise InvalidRequest(
            f"'input' holds {len(items)} inputs, more than {MAX_INPUTS}.", "input", "invalid_value"
        )
    for i, item in enumerate(items):
        if isinstance(item, str):
            if not item:
                raise InvalidRequest(f"'input[{i}]' is an empty string.", "input", "invalid_value")
        elif not _is_tokens(item):
            raise InvalidRequest(
                f"'input[{i}]' must be a non-empty string or array of non-negative tokens, "
                "all items of one kind.",
                "input",
                "invalid_type",
            )
    kinds = {isinstance(item, str) for item in items}
    if len(kinds) > 1:
        raise InvalidRequest("'input' mixes strings and token arrays.", "input", "invalid_type")
    return items


def input_tokens(value: Any, model: str) -> int:
    """The tokens the provider bills for `input`: each string counted with the model's
    tokenizer, each token array by its length."""
    return sum(
        count_text_tokens(item, model) if isinstance(item, str) else len(item)
        for item in inputs(value)
    )


def check_request(body: dict[str, Any]) -> None:
    """The shape of an embeddings body besides `input`: 400 naming the parameter."""
    model = body.get("model")
    if model is None:
        raise InvalidRequest("Missing required parameter: 'model'.", "model", "missing")
    if not isinstance(model, str):
        raise InvalidRequest("'model' must be a string.", "model", "invalid_type")
    encoding = body.get("encoding_format")
    if encoding is not None and encoding not in ENCODING_FORMATS:
        raise InvalidRequest(
            "'encoding_format' must be 'float' or 'base64'.", "encoding_format", "invalid_value"
        )
    dimensions = body.get("dimensions")
    if dimensions is not None and not (_is_token(dimensions) and dimensions > 0):
        raise InvalidRequest(
            "'dimensions' must be a positive integer.", "dimensions", "invalid_value"
        )
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise InvalidRequest("'user' must be a string.", "user", "invalid_type")


def reserve_arguments(body: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of `reserve` / `areserve` for an embeddings body: its counted
    input, and never the tier's fallback (a chat model)."""
    check_request(body)
    model = body["model"]
    return {"model": model, "tokens": input_tokens(body.get("input"), model), "fallback": False}
