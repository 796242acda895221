from __future__ import annotations

import pytest

from quotas.exceptions import InvalidRequest
from quotas.responses import (
    EventMeter,
    check_request,
    input_messages,
    output_text,
    provider_request,
    reserve_arguments,
)


def test_instructions_and_input_become_the_messages_estimated() -> None:
    items = [
        {"role": "user", "content": [{"type": "input_text", "text": "Hi"}]},
        {"type": "function_call_output", "call_id": "c1", "output": "42"},
    ]
    assert input_messages("Be brief.", "Hi") == [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
    ]
    assert input_messages(None, items) == items


def test_reserve_arguments_keep_the_output_cap_and_billed_parameters() -> None:
    body = {
        "model": "gpt-4o",
        "input": "Hi",
        "tools": [{"type": "function", "name": "f"}],
        "max_output_tokens": 50,
        "text": {"format": {"type": "json_object"}},
    }
    arguments = reserve_arguments(body)

    assert arguments["messages"] == [{"role": "user", "content": "Hi"}]
    assert arguments["tools"] == body["tools"]
    assert (arguments["max_output_tokens"], arguments["text"]) == (50, body["text"])
    assert "input" not in arguments


class Call:
    model = "gpt-4o-mini"
    max_tokens = 64


def test_the_provider_gets_the_served_model_and_one_output_cap() -> None:
    sent = provider_request(Call(), {"model": "gpt-4o", "input": "Hi", "max_tokens": 9})
    assert sent == {"model": "gpt-4o-mini", "input": "Hi", "max_output_tokens": 64}


def test_output_text_reads_messages_refusals_and_tool_calls() -> None:
    response = {
        "output": [
            {"type": "reasoning", "summary": []},
            {"type": "message", "content": [{"type": "output_text", "text": "Hello"}]},
            {"type": "message", "content": [{"type": "refusal", "refusal": " no"}]},
            {"type": "function_call", "arguments": '{"a":1}'},
        ]
    }
    assert output_text(response) == 'Hello no{"a":1}'


def test_the_meter_keeps_deltas_and_the_final_usage() -> None:
    meter = EventMeter()
    for event in [
        {"type": "response.created", "response": {"usage": None}},
        {"type": "response.output_text.delta", "delta": "Hel"},
        {"type": "response.output_text.delta", "delta": "lo"},
        {"type": "response.output_text.done", "text": "Hello"},
        {"type": "response.completed", "response": {"usage": {"input_tokens": 3}}},
    ]:
        assert meter.keep(event)

    assert meter.text == "Hello"
    assert meter.usage == {"input_tokens": 3}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, "input"),
        ({"input": 1}, "input"),
        ({"input": "hi", "instructions": 1}, "instructions"),
        ({"input": "hi", "stream": 1}, "stream"),
        ({"input": "hi", "text": "json"}, "text"),
    ],
)
def test_bad_shapes_are_refused_naming_the_parameter(body: dict, param: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        check_request(body)
    assert refused.value.param == param


def test_a_continued_conversation_needs_no_input() -> None:
    check_request({"previous_response_id": "resp_1"})
