"""The mock provider's Responses API answers: a response object, or its event stream."""

from __future__ import annotations

import json
import time
from typing import Any

from .mock_output import Answer

# Fields every response object carries, as OpenAI's do.
RESPONSE_DEFAULTS: dict[str, Any] = {
    "object": "response",
    "error": None,
    "incomplete_details": None,
    "metadata": {},
    "parallel_tool_calls": True,
    "previous_response_id": None,
    "reasoning": {"effort": None, "summary": None},
    "store": False,
    "temperature": 1.0,
    "text": {"format": {"type": "text"}},
    "tool_choice": "auto",
    "tools": [],
    "top_p": 1.0,
    "truncation": "disabled",
    "user": None,
}


def response_usage(prompt: int, cached: int, completion: int) -> dict[str, Any]:
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + completion,
    }


def response_object(
    number: int, body: dict[str, Any], reply: Answer, usage: dict[str, Any]
) -> dict[str, Any]:
    """The finished response: one assistant message holding the text, or a function call."""
    cut_short = reply.cut_short
    item: dict[str, Any] = {
        "id": f"msg_mock_{number:06d}",
        "type": "message",
        "status": "incomplete" if cut_short else "completed",
        "role": "assistant",
        "content": [{"type": "output_text", "text": reply.text, "annotations": [], "logprobs": []}],
    }
    if reply.tool_call is not None:
        item = {
            "id": f"fc_mock_{number:06d}",
            "type": "function_call",
            "status": "completed",
            "call_id": f"call_mock_{number:06d}",
            "name": reply.tool_call.name,
            "arguments": reply.tool_call.arguments,
        }
    return {
        **RESPONSE_DEFAULTS,
        "id": f"resp_mock_{number:06d}",
        "created_at": int(time.time()),
        "status": "incomplete" if cut_short else "completed",
        "incomplete_details": {"reason": "max_output_tokens"} if cut_short else None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": body["model"],
        "output": [item],
        "tools": body.get("tools") or [],
        "usage": usage,
    }


def _item_events(item: dict[str, Any], words: list[str]) -> list[dict[str, Any]]:
    """The events that build one output item: a message word by word, or a function call."""
    if item["type"] == "function_call":
        where: dict[str, Any] = {"item_id": item["id"], "output_index": 0}
        arguments = item["arguments"]
        return [
            {
                "type": "response.output_item.added",
                "output_index": 0,
                "item": {**item, "status": "in_progress", "arguments": ""},
            },
            {"type": "response.function_call_arguments.delta", **where, "delta": arguments},
            {"type": "response.function_call_arguments.done", **where, "arguments": arguments},
            {"type": "response.output_item.done", "output_index": 0, "item": item},
        ]
    text = item["content"][0]["text"]
    part: dict[str, Any] = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
    where = {"item_id": item["id"], "output_index": 0, "content_index": 0}
    return [
        {
            "type": "response.output_item.added",
            "output_index": 0,
            "item": {**item, "status": "in_progress", "content": []},
        },
        {"type": "response.content_part.added", **where, "part": part},
        *(
            {"type": "response.output_text.delta", **where, "delta": w, "logprobs": []}
            for w in words
        ),
        {"type": "response.output_text.done", **where, "text": text, "logprobs": []},
        {"type": "response.content_part.done", **where, "part": {**part, "text": text}},
        {"type": "response.output_item.done", "output_index": 0, "item": item},
    ]


def response_events(final: dict[str, Any], words: list[str]) -> list[bytes]:
    """The event stream that builds `final` piece by piece, as server-sent events."""
    started = {**final, "status": "in_progress", "output": [], "usage": None}
    started["incomplete_details"] = None
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": started},
        {"type": "response.in_progress", "response": started},
        *_item_events(final["output"][0], words),
        {
            "type": "response.incomplete"
            if final["status"] == "incomplete"
            else "response.completed",
            "response": final,
        },
    ]
    return [
        f"event: {event['type']}\ndata: {json.dumps({**event, 'sequence_number': i})}\n\n".encode()
        for i, event in enumerate(events)
    ]
