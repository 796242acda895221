from __future__ import annotations

import threading

import openai
import pytest

from quotas.mock_provider import FINGERPRINT, MODELS, MockTransport, httpx
from quotas.tokens import count_prompt_tokens, count_text_tokens
from tests.event_loop import run_in_fresh_loop

MODEL = "gpt-4o-mini"
MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "What is the capital of France, and why is it Paris?"},
]


class Sleeps(list[float]):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def transport(monkeypatch: pytest.MonkeyPatch) -> MockTransport:
    monkeypatch.delenv("QUOTAS_MOCK_FAIL", raising=False)
    monkeypatch.delenv("QUOTAS_MOCK_LATENCY", raising=False)
    transport = MockTransport()
    transport.sleep = Sleeps()
    return transport


@pytest.fixture
def client(transport: MockTransport) -> openai.OpenAI:
    return openai.OpenAI(
        api_key="mock",
        base_url="http://mock-provider.invalid/v1",
        http_client=httpx.Client(transport=transport),
        max_retries=0,
    )


def test_completion_is_labelled_and_its_usage_matches_our_count(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model=MODEL, messages=MESSAGES)

    text = completion.choices[0].message.content
    assert text is not None
    assert text.startswith("[mock] Reply to: What is the capital")
    assert completion.system_fingerprint == FINGERPRINT
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == count_prompt_tokens(MESSAGES, MODEL)
    assert completion.usage.completion_tokens == count_text_tokens(text, MODEL)
    assert completion.usage.completion_tokens == MockTransport.reply_tokens
    assert completion.usage.total_tokens == (
        completion.usage.prompt_tokens + completion.usage.completion_tokens
    )


def test_reply_is_derived_from_the_prompt(client: openai.OpenAI) -> None:
    def reply(content: str) -> str | None:
        messages = [{"role": "user", "content": content}]
        return (
            client.chat.completions.create(model=MODEL, messages=messages)
            .choices[0]
            .message.content
        )

    assert reply("Tell me a joke") == reply("Tell me a joke")
    assert reply("Tell me a joke") != reply("Tell me a story")


@pytest.mark.parametrize("max_tokens", [1, 2, 5, 12])
def test_max_tokens_caps_the_reply(client: openai.OpenAI, max_tokens: int) -> None:
    completion = client.chat.completions.create(
        model=MODEL, messages=MESSAGES, max_tokens=max_tokens
    )

    text = completion.choices[0].message.content or ""
    assert completion.usage is not None
    assert 0 < completion.usage.completion_tokens <= max_tokens
    assert completion.usage.completion_tokens == count_text_tokens(text, MODEL)
    assert completion.choices[0].finish_reason == "length"
    assert text.startswith("[mock]"[: len(text)])


def test_n_choices_are_all_counted(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model=MODEL, messages=MESSAGES, n=3)

    assert [c.index for c in completion.choices] == [0, 1, 2]
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 3 * MockTransport.reply_tokens


def test_stream_ends_with_a_usage_chunk(client: openai.OpenAI) -> None:
    whole = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=9)
    stream = client.chat.completions.create(
        model=MODEL,
        messages=MESSAGES,
        max_tokens=9,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)

    *content, last = chunks
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.model_dump() == whole.usage.model_dump()  # type: ignore[union-attr]
    assert all(c.usage is None for c in content)
    assert all(c.system_fingerprint == FINGERPRINT for c in chunks)
    assert content[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in content)
    assert text == whole.choices[0].message.content
    assert content[-1].choices[0].finish_reason == "length"


def test_stream_without_include_usage_has_no_usage_chunk(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
    chunks = list(stream)

    assert all(c.choices for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_models_list(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list()] == list(MODELS)


def test_unknown_parameters_reach_the_provider(
    client: openai.OpenAI, transport: MockTransport
) -> None:
    client.chat.completions.create(model=MODEL, messages=MESSAGES, extra_body={"top_k": 3})

    assert transport.last_request is not None
    assert transport.last_request["top_k"] == 3


def test_invalid_request_is_a_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(model=MODEL, messages="hello")  # type: ignore[arg-type]
    assert error.value.param == "messages"


def test_fault_timeout(client: openai.OpenAI, transport: MockTransport) -> None:
    transport.fail = "timeout"
    with pytest.raises(openai.APITimeoutError):
        client.chat.completions.create(model=MODEL, messages=MESSAGES)


def test_fault_500(client: openai.OpenAI, transport: MockTransport) -> None:
    transport.fail = "500"
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model=MODEL, messages=MESSAGES)


def test_fault_429_says_when_to_retry(client: openai.OpenAI, transport: MockTransport) -> None:
    transport.fail = "429"
    with pytest.raises(openai.RateLimitError) as error:
        client.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert error.value.response.headers["retry-after"] == "1"


def test_fault_malformed(client: openai.OpenAI, transport: MockTransport) -> None:
    transport.fail = "malformed"
    with pytest.raises(ValueError):
        client.chat.completions.create(model=MODEL, messages=MESSAGES)
    with pytest.raises(ValueError):
        list(client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True))


def test_fault_cut_breaks_the_stream_midway(
    client: openai.OpenAI, transport: MockTransport
) -> None:
    transport.fail = "cut"
    received = []
    stream = client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
    with pytest.raises(openai.APIConnectionError):
        for chunk in stream:
            received.append(chunk.choices[0].delta.content or "")
    assert "".join(received).startswith("[mock]")
    assert count_text_tokens("".join(received), MODEL) < MockTransport.reply_tokens


def test_fault_cut_without_stream(client: openai.OpenAI, transport: MockTransport) -> None:
    transport.fail = "cut"
    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(model=MODEL, messages=MESSAGES)


def test_fault_from_environment(client: openai.OpenAI, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUOTAS_MOCK_FAIL", "500")
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model=MODEL, messages=MESSAGES)
    monkeypatch.setenv("QUOTAS_MOCK_FAIL", "")
    client.chat.completions.create(model=MODEL, messages=MESSAGES)


def test_unknown_fault_is_refused() -> None:
    with pytest.raises(ValueError, match="expected one of"):
        MockTransport(fail="explode")


def test_latency_per_request_and_per_chunk(
    client: openai.OpenAI, transport: MockTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QUOTAS_MOCK_LATENCY", "0.25")
    client.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert transport.sleep == [0.25]

    transport.sleep.clear()  # type: ignore[attr-defined]
    chunks = list(client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True))
    # one wait before the answer, then one before each event after the first: the other
    # chunks and [DONE]
    assert transport.sleep == [0.25] * (1 + len(chunks))


def test_latency_longer_than_the_client_timeout_times_out(
    client: openai.OpenAI, transport: MockTransport
) -> None:
    transport.latency = 30
    with pytest.raises(openai.APITimeoutError):
        client.chat.completions.create(model=MODEL, messages=MESSAGES, timeout=2)
    assert transport.sleep == [2]


def test_calls_are_counted_across_threads(client: openai.OpenAI, transport: MockTransport) -> None:
    def work() -> None:
        for _ in range(10):
            client.models.list()

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert transport.calls == 80


def test_time_to_first_token_and_reply_length_markers(
    client: openai.OpenAI, transport: MockTransport
) -> None:
    asked = [
        {"role": "user", "content": "Go on [mock-first:2] [mock-latency:0.1] [mock-tokens:50]"}
    ]
    stream = client.chat.completions.create(
        model=MODEL, messages=asked, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)

    assert chunks[-1].usage.completion_tokens == 50
    # 2 s before the answer, then 0.1 s before each later event
    assert transport.sleep == [2.0] + [0.1] * len(chunks)


def test_the_async_transport_streams_part_by_part_on_the_event_loop(
    transport: MockTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio
    import time

    from quotas.mock_provider import AsyncMockTransport

    transport.latency = 0.2
    asked = [{"role": "user", "content": "Stream [mock-tokens:5]"}]

    async def one() -> list[float]:
        client = openai.AsyncOpenAI(
            api_key="mock",
            base_url="http://mock-provider.invalid/v1",
            http_client=httpx.AsyncClient(transport=AsyncMockTransport(transport)),
            max_retries=0,
        )
        seen = []
        async for _chunk in await client.chat.completions.create(
            model=MODEL, messages=asked, stream=True
        ):
            seen.append(time.monotonic())
        return seen

    async def many() -> list[list[float]]:
        return await asyncio.gather(*(one() for _ in range(50)))

    arrivals = run_in_fresh_loop(many())

    assert transport.sleep == []  # nothing waited in a thread
    # Each stream's chunks arrived one by one, not all at once at the end.
    assert all(times[-1] - times[0] >= 0.2 * (len(times) - 2) for times in arrivals)


# the Responses API and embeddings --------------------------------------------------------


def test_response_is_labelled_and_its_usage_matches_our_count(client: openai.OpenAI) -> None:
    reply = client.responses.create(model=MODEL, instructions="You are terse.", input="Hi there")

    assert reply.output_text.startswith("[mock] Reply to: Hi there")
    assert reply.usage.output_tokens == count_text_tokens(reply.output_text, MODEL)
    messages = [
        {"role": "developer", "content": "You are terse."},
        {"role": "user", "content": "Hi there"},
    ]
    assert reply.usage.input_tokens == count_prompt_tokens(messages, MODEL)
    assert reply.status == "completed"


def test_response_stream_builds_the_response_delta_by_delta(client: openai.OpenAI) -> None:
    events = list(
        client.responses.create(model=MODEL, input="Hi", max_output_tokens=5, stream=True)
    )

    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    final = events[-1]
    assert final.type == "response.incomplete"  # cut short by max_output_tokens
    assert final.response.output_text == text
    assert final.response.usage.output_tokens == count_text_tokens(text, MODEL) <= 5


def test_response_stream_cut_breaks_midway(client: openai.OpenAI, transport: MockTransport) -> None:
    transport.fail = "cut"
    seen = []
    with pytest.raises(openai.APIConnectionError):
        for event in client.responses.create(model=MODEL, input="Hi", stream=True):
            seen.append(event.type)
    assert "response.created" in seen
    assert "response.completed" not in seen


def test_a_long_prompt_repeated_is_reported_cached(client: openai.OpenAI) -> None:
    long = "quota " * 1200
    first = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": long}]
    )
    again = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": long}]
    )
    short = [{"role": "user", "content": "hi"}]
    client.chat.completions.create(model=MODEL, messages=short)
    short_again = client.chat.completions.create(model=MODEL, messages=short)

    assert first.usage.prompt_tokens_details.cached_tokens == 0
    cached = again.usage.prompt_tokens_details.cached_tokens
    assert cached % 128 == 0
    assert 1024 <= cached <= again.usage.prompt_tokens < cached + 128
    assert short_again.usage.prompt_tokens_details.cached_tokens == 0  # under 1024 tokens


@pytest.mark.parametrize("given", ["a cat", ["a cat", "a dog"], [1, 2, 3], [[1, 2], [3]]])
def test_embeddings_are_unit_vectors_that_depend_on_the_input(
    client: openai.OpenAI, given: object
) -> None:
    first = client.embeddings.create(model="text-embedding-3-small", input=given, dimensions=16)
    again = client.embeddings.create(model="text-embedding-3-small", input=given, dimensions=16)

    vectors = [item.embedding for item in first.data]
    assert vectors == [item.embedding for item in again.data]
    assert all(len(v) == 16 and abs(sum(x * x for x in v) - 1) < 1e-4 for v in vectors)
    assert len({tuple(v) for v in vectors}) == len(vectors)


def test_embeddings_of_bad_input_are_a_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client.embeddings.create(model="text-embedding-3-small", input="")
    assert refused.value.body["param"] == "input"
