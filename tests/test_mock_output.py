"""The mock provider honours tools, JSON formats and stop sequences, through the SDK."""

from __future__ import annotations

import json

import openai
import pytest

from quotas.mock_output import minimal_instance
from quotas.mock_provider import MockTransport, httpx

MODEL = "gpt-4o-mini"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1}},
            "required": ["city", "days"],
        },
    },
}


@pytest.fixture
def client() -> openai.OpenAI:
    return openai.OpenAI(
        api_key="mock",
        base_url="http://mock-provider.invalid/v1",
        http_client=httpx.Client(transport=MockTransport(latency=0.0, fail="")),
        max_retries=0,
    )


def ask(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def test_a_tool_the_message_asks_for_is_called(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=MODEL, messages=ask("Please use get_weather for Paris"), tools=[WEATHER]
    )

    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "", "days": 1}
    assert reply.usage.completion_tokens > 0


def test_a_tool_result_is_answered_in_text(client: openai.OpenAI) -> None:
    messages = [
        *ask("Please use get_weather for Paris"),
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": "{}"},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
    ]
    reply = client.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER])

    assert reply.choices[0].message.tool_calls is None
    assert reply.choices[0].message.content.startswith("[mock]")


def test_a_streamed_tool_call_is_assembled_by_the_sdk(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=ask("weather?"),
            tools=[WEATHER],
            tool_choice="required",
            stream=True,
        )
    )

    calls = [c.choices[0].delta.tool_calls for c in chunks if c.choices[0].delta.tool_calls]
    assert calls[0][0].function.name == "get_weather"
    assert json.loads("".join(c[0].function.arguments for c in calls)) == {"city": "", "days": 1}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_json_object_and_json_schema_answers_parse(client: openai.OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {"title": {"type": "string"}, "tags": {"type": "array", "items": {}}},
        "required": ["title", "tags"],
        "additionalProperties": False,
    }
    loose = client.chat.completions.create(
        model=MODEL, messages=ask("Hi"), response_format={"type": "json_object"}
    )
    strict = client.chat.completions.create(
        model=MODEL,
        messages=ask("Hi"),
        response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
    )

    assert json.loads(loose.choices[0].message.content)["reply"].startswith("[mock]")
    assert json.loads(strict.choices[0].message.content) == {"title": "", "tags": []}


def test_stop_cuts_the_answer(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model=MODEL, messages=ask("Hello there"), stop=" to:")

    assert reply.choices[0].message.content == "[mock] Reply"
    assert reply.choices[0].finish_reason == "stop"


def test_responses_call_functions_and_answer_in_the_asked_format(client: openai.OpenAI) -> None:
    tool = {
        "type": "function",
        "name": "get_weather",
        **{"parameters": WEATHER["function"]["parameters"]},
    }
    called = client.responses.create(model=MODEL, input="Use get_weather", tools=[tool])
    events = list(
        client.responses.create(model=MODEL, input="Use get_weather", tools=[tool], stream=True)
    )
    formatted = client.responses.create(
        model=MODEL, input="Hi", text={"format": {"type": "json_object"}}
    )

    assert called.output[0].type == "function_call"
    assert json.loads(called.output[0].arguments) == {"city": "", "days": 1}
    assert events[-1].response.output[0].name == "get_weather"
    assert "response.function_call_arguments.delta" in [e.type for e in events]
    assert json.loads(formatted.output_text)["reply"].startswith("[mock]")


def test_minimal_instances_follow_refs_enums_and_bounds() -> None:
    schema = {
        "$defs": {"Level": {"enum": ["low", "high"]}},
        "type": "object",
        "properties": {
            "level": {"$ref": "#/$defs/Level"},
            "score": {"type": "number", "exclusiveMinimum": 0},
            "note": {"type": ["string", "null"], "minLength": 2},
            "kind": {"const": "k"},
            "items": {"type": "array", "minItems": 1, "items": {"type": "boolean"}},
        },
    }
    assert minimal_instance(schema) == {
        "level": "low",
        "score": 1,
        "note": "xx",
        "kind": "k",
        "items": [False],
    }
