"""A Responses API call under the caller's quota: its input estimated as chat messages,
its output capped by `max_output_tokens`, settled from the response's usage.

A stream settles from `response.usage` in its final event (`response.completed`,
`response.incomplete` or `response.failed`); a stream that breaks before that is charged
the prompt estimate and the text delivered so far, counted with tiktoken.
"""

from __future__ import annotations

from typing import Any

from .exceptions import InvalidRequest

# Parameters `reserve` gets in another form (the input as messages); the rest pass through.
CONVERTED = ("model", "input", "instructions", "tools")
OUTPUT_CAPS = ("max_tokens", "max_completion_tokens", "max_output_tokens")
# Stream events carrying output as it is generated, and the events that end a stream.
DELTA_EVENTS = frozenset(
    {
        "response.output_text.delta",
        "response.refusal.delta",
        "response.function_call_arguments.delta",
        "response.reasoning_text.delta",
        "response.reasoning_summary_text.delta",
    }
)
FINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})


def _get(source: Any, name: str) -> Any:
    if isinstance(source, dict):
        return source.get(name)
    return getattr(source, name, None)


def input_messages(instructions: Any, input: Any) -> list[dict[str, Any]]:
    """`instructions` and `input` (a string, or a list of items) as the chat messages the
    prompt is estimated from; items that are not messages (function calls and their
    outputs, reasoning) count as their JSON."""
    messages: list[dict[str, Any]] = []
    if isinstance(instructions, str) and instructions:
        messages.append({"role": "developer", "content": instructions})
    if isinstance(input, str):
        messages.append({"role": "user", "content": input})
    elif isinstance(input, list):
        messages.extend(item for item in input if isinstance(item, dict))
    return messages


def check_request(body: dict[str, Any]) -> None:
    """The shape of a Responses body; the tier's rules come after. 400 naming the parameter."""
    value = body.get("input")
    items = isinstance(value, list) and all(isinstance(i, dict) for i in value)
    if value is not None and not isinstance(value, str) and not items:
        raise InvalidRequest(
            "'input' must be a string or an array of input items.", "input", "invalid_type"
        )
    continued = ("previous_response_id", "conversation", "prompt")  # input from elsewhere
    if value is None and not any(body.get(k) for k in continued):
        raise InvalidRequest("Missing required parameter: 'input'.", "input", "missing")
    for name in ("instructions", "previous_response_id", "user"):
        if body.get(name) is not None and not isinstance(body[name], str):
            raise InvalidRequest(f"'{name}' must be a string.", name, "invalid_type")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise InvalidRequest("'stream' must be a boolean.", "stream", "invalid_type")
    for name, kind, label in (("tools", list, "an array"), ("text", dict, "an object")):
        if body.get(name) is not None and not isinstance(body[name], kind):
            raise InvalidRequest(f"'{name}' must be {label}.", name, "invalid_type")


def reserve_arguments(body: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of `reserve` / `areserve` for a Responses body (checked)."""
    check_request(body)
    return {
        "model": body.get("model"),
        "messages": input_messages(body.get("instructions"), body.get("input")),
        "tools": body.get("tools"),
        **{k: v for k, v in body.items() if k not in CONVERTED},
    }


def provider_request(call: Any, body: dict[str, Any]) -> dict[str, Any]:
    """`body` as the provider gets it: the served model and the granted `max_output_tokens`."""
    send = {k: v for k, v in body.items() if k not in OUTPUT_CAPS}
    send.update({"model": call.model, "max_output_tokens": call.max_tokens})
    return send


def output_text(response: Any) -> str:
    """The output a response delivered, as text: its messages, refusals and tool calls."""
    parts: list[str] = []
    for item in _get(response, "output") or []:
        if _get(item, "type") == "function_call":
            arguments = _get(item, "arguments")
            if isinstance(arguments, str):
                parts.append(arguments)
        for part in _get(item, "content") or []:
            text = _get(part, "text")
            if not isinstance(text, str):
                text = _get(part, "refusal")
            if isinstance(text, str):
                parts.append(text)
    return "".join(parts)


class EventMeter:
    """What a Responses stream delivered, and the usage of its final event."""

    def __init__(self) -> None:
        self.usage: Any = None
        self.delivered: list[str] = []

    def keep(self, event: Any) -> bool:
        """Record one stream event (a dict or an SDK event object); every one is passed on."""
        kind = _get(event, "type")
        if kind in DELTA_EVENTS:
            delta = _get(event, "delta")
            if isinstance(delta, str):
                self.delivered.append(delta)
        elif kind in FINAL_EVENTS:
            usage = _get(_get(event, "response"), "usage")
            if usage is not None:
                self.usage = usage
        return True

    @property
    def text(self) -> str:
        return "".join(self.delivered)
