"""`quotas.metered_openai` / `quotas.metered_async_openai` against a live server standing in
for the provider (this project's own /v1/, on a second, unlimited account)."""

from __future__ import annotations

import pytest

import quotas
from tests.event_loop import run_in_fresh_loop

from .conftest import ledger

HELLO = [{"role": "user", "content": "Hello there"}]
live = pytest.mark.django_db(transaction=True)


@pytest.fixture
def provider(settled_server, make_caller):
    """Client settings pointing at the live server, with a key of an unlimited account."""
    account = make_caller("provider", allowed=())
    return {"base_url": f"{settled_server.url}/v1", "api_key": account.key, "timeout": 20}


@live
def test_a_completion_is_reserved_and_settled(provider, make_caller, mock) -> None:
    caller = make_caller(tokens_per_day=10_000, max_tokens_per_request=30)
    client = quotas.metered_openai(caller.user, **provider)

    reply = client.chat.completions.create(messages=HELLO)  # no model: the tier's default

    assert reply.model == "gpt-4o-mini"
    assert mock.last_request["max_tokens"] == 30  # the tier's cap, as the default
    used = ledger(caller.user)
    assert used["requests"] == 1
    assert (used["prompt"], used["completion"]) == (
        reply.usage.prompt_tokens,
        reply.usage.completion_tokens,
    )
    client.close()


@live
def test_the_end_user_field_reaches_the_provider(provider, make_caller, mock) -> None:
    caller = make_caller()
    client = quotas.metered_openai(caller.user, **provider)

    client.chat.completions.create(messages=HELLO, user="end-user-42")

    assert mock.last_request["user"] == "end-user-42"
    assert ledger(caller.user)["requests"] == 1
    client.close()


@live
def test_over_quota_raises_without_calling_the_provider(provider, make_caller, mock) -> None:
    caller = make_caller(requests_per_day=1)
    client = quotas.metered_openai(caller.user, **provider)
    client.chat.completions.create(messages=HELLO, max_tokens=5)
    calls = mock.calls

    with pytest.raises(quotas.QuotaExceeded) as denied:
        client.chat.completions.create(messages=HELLO, max_tokens=5)

    assert denied.value.limit == "requests_per_day"
    assert mock.calls == calls
    client.close()


@live
def test_a_stream_settles_from_its_usage_chunk(provider, make_caller, mock) -> None:
    caller = make_caller(tokens_per_day=10_000)
    client = quotas.metered_openai(caller.user, **provider)

    chunks = list(client.chat.completions.create(messages=HELLO, max_tokens=8, stream=True))

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("[mock]")
    assert all(c.choices for c in chunks)  # the usage chunk was not asked for
    used = ledger(caller.user)
    assert used["requests"] == 1
    assert used["completion"] == 8
    client.close()


@live
def test_the_async_client_is_metered_too(provider, make_caller, mock) -> None:
    caller = make_caller(requests_per_day=2, tokens_per_day=10_000)

    async def run():
        client = quotas.metered_async_openai(caller.user, **provider)
        reply = await client.chat.completions.create(model="gpt-4o", messages=HELLO, max_tokens=6)
        stream = await client.chat.completions.create(
            messages=HELLO, max_tokens=4, stream=True, stream_options={"include_usage": True}
        )
        chunks = [chunk async for chunk in stream]
        calls = mock.calls
        with pytest.raises(quotas.QuotaExceeded):
            await client.chat.completions.create(messages=HELLO, max_tokens=4)
        await client.close()
        return reply, chunks, calls

    reply, chunks, calls = run_in_fresh_loop(run())

    assert reply.model == "gpt-4o"
    assert chunks[-1].usage.completion_tokens == 4
    assert mock.calls == calls
    used = ledger(caller.user)
    assert (used["requests"], used["completion"], used["denied"]) == (2, 10, 1)


def test_without_settings_it_talks_to_the_mock_provider(make_caller, mock) -> None:
    caller = make_caller(tokens_per_day=10_000)
    client = quotas.metered_openai(caller.user)

    reply = client.chat.completions.create(messages=HELLO, max_tokens=5)

    assert reply.choices[0].message.content.startswith("[mock]")
    assert ledger(caller.user)["completion"] == reply.usage.completion_tokens > 0


# responses and embeddings ---------------------------------------------------------------


@pytest.fixture
def embedder(catalogue):
    from decimal import Decimal

    from quotas.models import AIModel

    catalogue["text-embedding-3-small"] = AIModel.objects.create(
        name="text-embedding-3-small", input_price_per_million=Decimal(1)
    )
    return catalogue["text-embedding-3-small"]


@live
def test_a_response_is_reserved_and_settled(provider, make_caller, mock) -> None:
    caller = make_caller(tokens_per_day=10_000, max_tokens_per_request=30)
    client = quotas.metered_openai(caller.user, **provider)

    reply = client.responses.create(input="Hello there")  # no model: the tier's default

    assert reply.output_text.startswith("[mock] Reply to: Hello there")
    assert mock.last_request["max_output_tokens"] == 30
    used = ledger(caller.user, model="gpt-4o-mini")
    assert (used["requests"], used["prompt"], used["completion"]) == (
        1,
        reply.usage.input_tokens,
        reply.usage.output_tokens,
    )
    client.close()


@live
def test_a_response_stream_settles_from_response_completed(provider, make_caller, mock) -> None:
    caller = make_caller(tokens_per_day=10_000)
    client = quotas.metered_openai(caller.user, **provider)

    events = list(client.responses.create(model="gpt-4o", input="Hi", stream=True))

    assert events[-1].type == "response.completed"
    usage = events[-1].response.usage
    used = ledger(caller.user, model="gpt-4o")
    assert (used["requests"], used["prompt"], used["completion"]) == (
        1,
        usage.input_tokens,
        usage.output_tokens,
    )
    client.close()


@live
def test_embeddings_are_reserved_and_settled(provider, make_caller, embedder, mock) -> None:
    caller = make_caller(allowed=("gpt-4o-mini", "text-embedding-3-small"), requests_per_day=1)
    client = quotas.metered_openai(caller.user, **provider)

    result = client.embeddings.create(model="text-embedding-3-small", input=[[1, 2, 3], [4]])
    calls = mock.calls
    with pytest.raises(quotas.QuotaExceeded):
        client.embeddings.create(model="text-embedding-3-small", input="again")

    assert len(result.data[0].embedding) == 1536  # base64 on the wire, floats here
    assert mock.calls == calls
    used = ledger(caller.user, model="text-embedding-3-small")
    assert (used["requests"], used["prompt"], used["completion"], used["denied"]) == (1, 4, 0, 1)
    client.close()


@live
def test_the_async_client_meters_responses_and_embeddings(
    provider, make_caller, embedder, mock
) -> None:
    caller = make_caller(
        allowed=("gpt-4o-mini", "text-embedding-3-small"), requests_per_day=3, tokens_per_day=10_000
    )

    async def run():
        client = quotas.metered_async_openai(caller.user, **provider)
        reply = await client.responses.create(input="Hi", max_output_tokens=6)
        stream = await client.responses.create(input="Hi", max_output_tokens=4, stream=True)
        events = [event async for event in stream]
        vectors = await client.embeddings.create(model="text-embedding-3-small", input="Hi")
        calls = mock.calls
        with pytest.raises(quotas.QuotaExceeded):
            await client.responses.create(input="Hi")
        await client.close()
        return reply, events, vectors, calls

    reply, events, vectors, calls = run_in_fresh_loop(run())

    assert reply.usage.output_tokens <= 6
    assert events[-1].response.usage.output_tokens <= 4
    assert mock.calls == calls
    chat = ledger(caller.user, model="gpt-4o-mini")
    assert chat["requests"] == 2
    assert chat["completion"] == reply.usage.output_tokens + events[-1].response.usage.output_tokens
    assert ledger(caller.user, model="text-embedding-3-small")["prompt"] == (
        vectors.usage.prompt_tokens
    )
