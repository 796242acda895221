"""POST /v1/responses through the official openai SDK and a plain HTTP client: answers,
streams, and what the ledger is charged."""

from __future__ import annotations

import json

import openai
import pytest

from quotas.responses import input_messages
from quotas.tokens import count_prompt_tokens, count_text_tokens

from .conftest import ledger
from .test_chat_stream import Raw, wait_for_free_lease

URL = "/v1/responses"
live = pytest.mark.django_db(transaction=True)


@pytest.fixture
def raw(settled_server):
    return lambda caller: Raw(settled_server.url, caller)


def server_events(response):
    """The (event name, data) pairs of a Responses event stream, until it ends."""
    name = None
    while line := response.readline():
        line = line.strip()
        if line.startswith(b"event: "):
            name = line[len(b"event: ") :].decode()
        elif line.startswith(b"data: "):
            yield name, json.loads(line[len(b"data: ") :])


@live
def test_sdk_response_is_answered_and_settled_to_its_usage(make_caller, sdk, mock) -> None:
    caller = make_caller(tokens_per_day=10_000)

    raw = sdk(caller).responses.with_raw_response.create(
        model="gpt-4o", input="Hello there", max_output_tokens=12
    )
    reply = raw.parse()

    assert reply.object == "response"
    assert reply.status == "incomplete"  # cut short by max_output_tokens
    assert reply.output_text.startswith("[mock] Reply to: Hello there")
    assert reply.usage.output_tokens == 12
    assert reply.usage.input_tokens == count_prompt_tokens(
        [{"role": "user", "content": "Hello there"}], "gpt-4o"
    )
    assert mock.last_request["max_output_tokens"] == 12
    assert ledger(caller.user, model="gpt-4o") == {
        "requests": 1,
        "prompt": reply.usage.input_tokens,
        "completion": 12,
        "denied": 0,
    }
    assert raw.headers["x-ratelimit-limit-tokens"] == "10000"


@live
def test_sdk_stream_is_parsed_and_settled_from_response_completed(make_caller, sdk, mock) -> None:
    caller = make_caller(tokens_per_day=10_000)

    events = list(
        sdk(caller).responses.create(
            model="gpt-4o-mini",
            instructions="Be brief.",
            input=[{"role": "user", "content": [{"type": "input_text", "text": "Hi"}]}],
            stream=True,
        )
    )

    kinds = [event.type for event in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text.startswith("[mock] Reply to: Hi")
    usage = events[-1].response.usage
    assert events[-1].response.output_text == text
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert ledger(caller.user, model="gpt-4o-mini") == {
        "requests": 1,
        "prompt": usage.input_tokens,
        "completion": usage.output_tokens,
        "denied": 0,
    }


@live
def test_the_tier_caps_max_output_tokens(make_caller, sdk, mock) -> None:
    caller = make_caller(max_tokens_per_request=8)
    client = sdk(caller)

    client.responses.create(model="gpt-4o", input="Hi")
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(model="gpt-4o", input="Hi", max_output_tokens=9)

    assert mock.last_request["max_output_tokens"] == 8  # the tier's cap, as the default
    assert refused.value.body["param"] == "max_output_tokens"
    assert refused.value.body["code"] == "max_tokens_exceeded"
    assert mock.calls == 1


def test_instructions_and_tools_count_in_the_estimate(make_caller, mock) -> None:
    """A budget that fits the input alone refuses it with the instructions or the tools."""
    caller = make_caller(tokens_per_day=60, max_tokens_per_request=10)
    long = "Answer in the style of a very long and elaborate legal contract. " * 4
    tool = {
        "type": "function",
        "name": "lookup_the_weather_forecast_for_a_city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
    client = caller.client()

    plain = client.post(URL, {"model": "gpt-4o", "input": "Hi"}, format="json")
    instructed = client.post(
        URL, {"model": "gpt-4o", "input": "Hi", "instructions": long}, format="json"
    )
    tooled = client.post(
        URL, {"model": "gpt-4o", "input": "Hi", "tools": [tool] * 3}, format="json"
    )

    assert plain.status_code == 200
    for refused in (instructed, tooled):
        assert refused.status_code == 400
        assert refused.json()["error"]["code"] == "context_length_exceeded"
    assert mock.calls == 1


def test_over_quota_is_a_429_without_calling_the_provider(make_caller, mock) -> None:
    caller = make_caller(requests_per_day=1)
    client = caller.client()
    client.post(URL, {"model": "gpt-4o", "input": "Hi"}, format="json")

    refused = client.post(URL, {"model": "gpt-4o", "input": "Hi"}, format="json")

    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "insufficient_quota"
    assert "Retry-After" in refused
    assert mock.calls == 1
    assert ledger(caller.user)["denied"] == 1


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "gpt-4o"}, "input"),
        ({"model": "gpt-4o", "input": 3}, "input"),
        ({"model": "gpt-4o", "input": ["hi"]}, "input"),
        ({"model": "gpt-4o", "input": "hi", "instructions": ["x"]}, "instructions"),
        ({"model": "gpt-4o", "input": "hi", "stream": "yes"}, "stream"),
        ({"model": "gpt-4o", "input": "hi", "tools": {}}, "tools"),
        ({"model": "gpt-4o", "input": "hi", "max_output_tokens": 0}, "max_output_tokens"),
        ({"model": "gpt-9", "input": "hi"}, "model"),
    ],
)
def test_bad_input_is_a_400_naming_the_parameter(make_caller, mock, body, param) -> None:
    response = make_caller().client().post(URL, body, format="json")

    assert response.status_code == 400
    assert response.json()["error"]["param"] == param
    assert mock.calls == 0


@live
def test_a_disconnected_stream_is_charged_what_was_delivered(make_caller, raw, mock) -> None:
    caller = make_caller(max_concurrent_requests=1, tokens_per_day=10_000)
    client = raw(caller)
    mock.latency = 0.05  # 20 tokens: the whole stream would take over a second
    body = {"model": "gpt-4o", "input": "Tell me about quotas", "stream": True}

    stream = client.open("POST", URL, body)
    name, first = next(server_events(stream))
    assert (name, first["type"]) == ("response.created", "response.created")
    stream.close()  # hang up mid-stream

    assert wait_for_free_lease(client) < 5
    book = ledger(caller.user, model="gpt-4o")
    assert book["requests"] == 1
    messages = input_messages(None, "Tell me about quotas")
    assert book["prompt"] == count_prompt_tokens(messages, "gpt-4o")
    assert 0 <= book["completion"] < 20  # what was sent, not the worst case


@live
def test_a_stream_cut_by_the_provider_ends_with_an_error_event(make_caller, raw, mock) -> None:
    caller = make_caller(tokens_per_day=10_000)
    mock.fail = "cut"
    body = {"model": "gpt-4o", "input": "Tell me about quotas", "stream": True}

    response = raw(caller).open("POST", URL, body)
    received = list(server_events(response))

    assert response.status == 200
    name, last = received[-1]
    assert name == "error" and last["type"] == "error"
    assert "mid-stream" in last["message"]
    delivered = "".join(
        data["delta"] for _, data in received if data["type"] == "response.output_text.delta"
    )
    assert delivered.startswith("[mock]")
    sent = count_text_tokens(delivered, "gpt-4o")
    assert (ledger(caller.user)["requests"], ledger(caller.user)["completion"]) == (1, sent)


def test_the_provider_failing_refunds_and_answers_502(make_caller, mock) -> None:
    caller = make_caller(requests_per_day=5)
    mock.fail = "500"

    response = caller.client().post(URL, {"model": "gpt-4o", "input": "Hi"}, format="json")

    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_error"
    assert ledger(caller.user)["requests"] == 0


@live
def test_cached_tokens_are_priced_at_the_cached_rate(make_caller, catalogue, sdk, mock) -> None:
    from decimal import Decimal

    from quotas.models import UsageRecord

    gpt4o = catalogue["gpt-4o"]  # $2.50 input, $10.00 output per million
    gpt4o.cached_input_price_per_million = Decimal("1.25")
    gpt4o.save()
    caller = make_caller(tokens_per_day=100_000)
    client = sdk(caller)
    long = "Quotas keep a budget whole. " * 250  # over 1024 tokens: the provider caches it

    first = client.responses.create(model="gpt-4o", input=long, max_output_tokens=10)
    again = client.responses.create(model="gpt-4o", input=long, max_output_tokens=10)

    cached = again.usage.input_tokens_details.cached_tokens
    assert first.usage.input_tokens_details.cached_tokens == 0
    assert cached >= 1024
    row = UsageRecord.objects.get(user=caller.user, model="gpt-4o")
    assert row.cached_tokens == cached
    prompt = first.usage.input_tokens + again.usage.input_tokens
    output = first.usage.output_tokens + again.usage.output_tokens
    full_price = (Decimal(prompt) * Decimal("2.50") + output * Decimal(10)) / 1_000_000
    discount = cached * (Decimal("2.50") - Decimal("1.25")) / 1_000_000
    assert abs(row.cost - (full_price - discount)) <= Decimal("0.000002")  # rounded up per call
    report = client.get("/quota", cast_to=object)
    assert report["usage"]["today"]["cached_tokens"] == cached
    assert report["usage"]["today"]["reasoning_tokens"] == 0


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"tools": [{"type": "web_search"}]}, "tools"),
        ({"background": True}, "background"),
        ({"service_tier": "priority"}, "service_tier"),
    ],
)
def test_parameters_that_change_the_bill_are_refused(make_caller, mock, extra, param) -> None:
    caller = make_caller()

    response = caller.client().post(URL, {"model": "gpt-4o", "input": "Hi", **extra}, format="json")

    assert response.status_code == 400
    assert response.json()["error"]["param"] == param
    assert response.json()["error"]["code"] == "unsupported_parameter"
    assert mock.calls == 0
    assert ledger(caller.user)["requests"] == 0


# under ASGI (Django's AsyncClient runs the ASGI handler) --------------------------------


def asgi_stream(caller, **body):
    from django.test import AsyncClient

    payload = {"model": "gpt-4o", "input": "Tell me about quotas", "stream": True, **body}
    return AsyncClient().post(
        URL,
        json.dumps(payload),
        content_type="application/json",
        headers={"Authorization": f"Bearer {caller.key}"},
    )


def asgi_events(parts):
    text = b"".join(parts).decode()
    return [json.loads(line[6:]) for line in text.split("\n") if line.startswith("data: ")]


@live
def test_under_asgi_a_stream_is_sent_event_by_event_and_settled(make_caller, mock) -> None:
    from tests.event_loop import run_in_fresh_loop

    caller = make_caller(max_concurrent_requests=1, tokens_per_day=10_000)
    mock.latency = 0.02

    async def run():
        response = await asgi_stream(caller, max_output_tokens=10)
        assert response.status_code == 200, response.content
        iterator = aiter(response.streaming_content)
        first = await anext(iterator)  # sent before the provider has finished
        rest = [part async for part in iterator]
        return response, first, rest

    response, first, rest = run_in_fresh_loop(run())

    assert response.is_async
    assert b"response.created" in first
    events = asgi_events([first, *rest])
    assert events[-1]["type"] == "response.incomplete"
    usage = events[-1]["response"]["usage"]
    assert ledger(caller.user)["completion"] == usage["output_tokens"] == 10


@live
def test_under_asgi_a_stream_the_client_leaves_is_charged_what_was_delivered(
    make_caller, mock
) -> None:
    import asyncio

    from tests.event_loop import run_in_fresh_loop

    caller = make_caller(max_concurrent_requests=1, tokens_per_day=10_000)
    mock.latency = 0.05  # 20 tokens: the whole stream would take over a second

    async def run():
        response = await asgi_stream(caller)
        parts = []

        async def read():
            async for part in response.streaming_content:
                parts.append(part)

        reading = asyncio.ensure_future(read())
        while sum(e["type"] == "response.output_text.delta" for e in asgi_events(parts)) < 3:
            await asyncio.sleep(0.01)
        reading.cancel()  # what Django does when the client goes away
        with pytest.raises(asyncio.CancelledError):
            await reading
        return parts

    parts = run_in_fresh_loop(run())

    delivered = "".join(
        e["delta"] for e in asgi_events(parts) if e["type"] == "response.output_text.delta"
    )
    book = ledger(caller.user)
    assert book["requests"] == 1
    # What was sent, and at most the event read from the provider as the client left.
    assert count_text_tokens(delivered, "gpt-4o") <= book["completion"] < 20
    report = caller.client().get("/v1/quota").json()
    assert report["limits"]["max_concurrent_requests"]["used"] == 0
