"""Streamed chat completions: what the client reads, and what the ledger is charged."""

from __future__ import annotations

import http.client
import json
import time
from typing import Any
from urllib.parse import urlsplit

import openai
import pytest

from quotas.tokens import count_prompt_tokens, count_text_tokens

from .conftest import Caller, ledger, settled_ledger

pytestmark = pytest.mark.django_db(transaction=True)

URL = "/v1/chat/completions"
HELLO = [{"role": "user", "content": "Tell me about quotas"}]


class Raw:
    """A plain HTTP client for the live server, to read SSE and hang up mid-stream."""

    def __init__(self, base_url: str, caller: Caller) -> None:
        parts = urlsplit(base_url)
        self.host, self.port = parts.hostname, parts.port
        self.headers = {
            "Authorization": f"Bearer {caller.key}",
            "Content-Type": "application/json",
        }

    def open(self, method: str, path: str, body: Any = None) -> http.client.HTTPResponse:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=10)
        data = None if body is None else json.dumps(body)
        connection.request(method, path, body=data, headers=self.headers)
        return connection.getresponse()

    def json(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        response = self.open(method, path, body)
        try:
            return response.status, json.loads(response.read())
        finally:
            response.close()


def events(response: http.client.HTTPResponse):
    """The `data:` payloads of an SSE body, decoded ("[DONE]" as is), until it ends."""
    while line := response.readline():
        line = line.strip()
        if not line:
            continue
        assert line.startswith(b"data: "), line
        payload = line[len(b"data: ") :]
        yield payload.decode() if payload == b"[DONE]" else json.loads(payload)


def text_of(chunks: list[dict[str, Any]]) -> str:
    return "".join(
        choice["delta"].get("content") or ""
        for chunk in chunks
        for choice in chunk.get("choices", [])
    )


@pytest.fixture
def raw(settled_server) -> Any:
    return lambda caller: Raw(settled_server.url, caller)


def test_sdk_stream_ends_with_the_usage_chunk_and_settles_to_it(make_caller, sdk, mock) -> None:
    caller = make_caller(tokens_per_day=10_000)

    stream = sdk(caller).chat.completions.create(
        model="gpt-4o",
        messages=HELLO,
        max_tokens=15,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)

    assert {c.model for c in chunks} == {"gpt-4o"}
    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("[mock] Reply to: Tell me about quotas")
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "length" and set(finishes[:-1]) == {None}
    *content, last = chunks
    assert all(c.usage is None for c in content)
    assert last.choices == []
    assert last.usage.prompt_tokens == count_prompt_tokens(HELLO, "gpt-4o")
    assert last.usage.completion_tokens == count_text_tokens(text, "gpt-4o") == 15
    assert ledger(caller.user, model="gpt-4o") == {
        "requests": 1,
        "prompt": last.usage.prompt_tokens,
        "completion": last.usage.completion_tokens,
        "denied": 0,
    }


def test_sdk_stream_without_include_usage_has_no_usage_chunk_but_is_charged(
    make_caller, sdk, mock
) -> None:
    caller = make_caller()

    stream = sdk(caller).chat.completions.create(
        model="gpt-4o-mini", messages=HELLO, max_tokens=10, stream=True
    )
    chunks = list(stream)

    assert all(c.choices and c.usage is None for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    book = ledger(caller.user)
    assert book["requests"] == 1
    assert book["prompt"] == count_prompt_tokens(HELLO, "gpt-4o-mini")
    assert book["completion"] == count_text_tokens(text, "gpt-4o-mini") == 10


def test_a_request_right_after_a_finished_stream_is_admitted(make_caller, sdk, mock) -> None:
    caller = make_caller(max_concurrent_requests=1)
    client = sdk(caller)

    for _ in range(5):
        list(client.chat.completions.create(model="gpt-4o", messages=HELLO, stream=True))
        # No 429: the stream was settled, and its lease freed, before it ended.
        client.chat.completions.create(model="gpt-4o-mini", messages=HELLO, max_tokens=1)

    assert ledger(caller.user, model="gpt-4o")["requests"] == 5
    assert settled_ledger(caller.user, 5, model="gpt-4o-mini")["requests"] == 5


def test_raw_stream_is_server_sent_events_ending_in_done(make_caller, raw, mock) -> None:
    caller = make_caller(tokens_per_day=10_000)
    body = {"messages": HELLO, "max_tokens": 8, "stream": True}

    response = raw(caller).open("POST", URL, {**body, "stream_options": {"include_usage": True}})
    received = list(events(response))

    assert response.status == 200
    assert response.getheader("Content-Type") == "text/event-stream"
    assert response.getheader("Cache-Control") == "no-cache"
    assert response.getheader("x-ratelimit-limit-tokens") == "10000"
    assert received[-1] == "[DONE]"
    usage = received[-2]["usage"]
    assert usage["completion_tokens"] == 8
    assert all(isinstance(e, dict) and "error" not in e for e in received[:-1])
    assert ledger(caller.user)["completion"] == 8


def test_rate_limited_stream_is_a_429_before_any_event(make_caller, sdk, mock) -> None:
    caller = make_caller(requests_per_minute=1, burst=1)
    client = sdk(caller)
    list(client.chat.completions.create(model="gpt-4o-mini", messages=HELLO, stream=True))

    with pytest.raises(openai.RateLimitError) as denied:
        client.chat.completions.create(model="gpt-4o-mini", messages=HELLO, stream=True)

    assert denied.value.code == "rate_limit_exceeded"
    assert int(denied.value.response.headers["retry-after"]) >= 1
    assert mock.calls == 1


def test_degraded_stream_names_the_requested_model(make_caller, raw, mock) -> None:
    caller = make_caller(
        default="gpt-4o", fallback="gpt-4o-mini", requests_per_day=10, degrade_at_percent=50
    )
    client = raw(caller)
    for _ in range(6):  # 4 of 10 requests left: under 50%
        status, reply = client.json("POST", URL, {"model": "gpt-4o", "messages": HELLO})
        assert (status, reply["model"]) == (200, "gpt-4o")

    response = client.open("POST", URL, {"model": "gpt-4o", "messages": HELLO, "stream": True})
    received = list(events(response))

    assert response.getheader("X-Quota-Downgraded-From") == "gpt-4o"
    assert {e["model"] for e in received[:-1]} == {"gpt-4o-mini"}
    assert received[-1] == "[DONE]"
    assert ledger(caller.user, model="gpt-4o-mini")["requests"] == 1


def wait_for_free_lease(client: Raw, seconds: float = 5.0) -> float:
    """Poll /v1/quota until no request of the caller is in flight; the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        status, report = client.json("GET", "/v1/quota")
        assert status == 200
        if report["limits"]["max_concurrent_requests"]["used"] == 0:
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"the stream's lease was still held after {seconds} s")


def test_disconnected_stream_releases_its_lease_and_is_charged_what_was_sent(
    make_caller, raw, mock
) -> None:
    caller = make_caller(max_concurrent_requests=1, tokens_per_day=10_000)
    client = raw(caller)
    mock.latency = 0.05  # 20 tokens: the whole stream would take over a second
    body = {"model": "gpt-4o", "messages": HELLO, "max_tokens": 20, "stream": True}

    stream = client.open("POST", URL, body)
    first = next(events(stream))
    assert first["choices"][0]["delta"]["role"] == "assistant"
    # While it streams, the caller's one concurrent request is taken.
    status, busy = client.json("POST", URL, {"model": "gpt-4o-mini", "messages": HELLO})
    assert status == 429
    assert busy["error"]["code"] == "rate_limit_exceeded"
    assert "concurrent" in busy["error"]["message"]

    stream.close()  # hang up mid-stream

    assert wait_for_free_lease(client) < 5
    status, reply = client.json("POST", URL, {"model": "gpt-4o-mini", "messages": HELLO})
    assert status == 200, reply
    book = ledger(caller.user, model="gpt-4o")
    assert book["requests"] == 1
    assert book["prompt"] == count_prompt_tokens(HELLO, "gpt-4o")
    # What was sent before the server noticed, not the worst case nor the whole answer.
    assert 0 < book["completion"] < 20


def test_stream_cut_by_the_provider_ends_with_an_error_event_and_charges_the_part_sent(
    make_caller, raw, mock
) -> None:
    caller = make_caller(max_concurrent_requests=1, tokens_per_day=10_000)
    client = raw(caller)
    mock.fail = "cut"
    body = {"model": "gpt-4o", "messages": HELLO, "max_tokens": 20, "stream": True}

    response = client.open("POST", URL, {**body, "stream_options": {"include_usage": True}})
    received = list(events(response))

    assert response.status == 200
    *chunks, last = received
    assert "[DONE]" not in received
    assert last["error"]["type"] == "server_error"
    assert "mid-stream" in last["error"]["message"]
    delivered = text_of(chunks)
    assert delivered.startswith("[mock]")
    sent = count_text_tokens(delivered, "gpt-4o")
    assert 0 < sent < 20
    book = ledger(caller.user, model="gpt-4o")
    assert (book["requests"], book["completion"]) == (1, sent)
    assert book["prompt"] == count_prompt_tokens(HELLO, "gpt-4o")

    mock.fail = ""
    status, _ = client.json("POST", URL, {"model": "gpt-4o-mini", "messages": HELLO})
    assert status == 200  # the lease was released
