"""An OpenAI-compatible provider in process: an httpx transport for the official openai SDK."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

try:  # openai 3.x speaks httpx2; earlier versions httpx.
    import httpx2 as httpx
except ImportError:  # pragma: no cover
    import httpx  # type: ignore[no-redef]

from . import embeddings
from .exceptions import InvalidRequest
from .mock_embeddings import embeddings_answer
from .mock_output import answer
from .mock_responses import response_events, response_object, response_usage
from .responses import input_messages
from .tokens import count_prompt_tokens, count_text_tokens

FAULTS = ("timeout", "500", "429", "malformed", "cut")
MODELS = (
    "gpt-4o-mini",
    "gpt-4o",
    "gpt-4.1-mini",
    "gpt-4.1",
    "gpt-3.5-turbo",
    "text-embedding-3-small",
    "text-embedding-3-large",
)
# Parameters billed as input besides the messages (chat) or the input items (responses).
BILLED = ("tools", "functions", "response_format", "tool_choice", "function_call", "text")
FINGERPRINT = "quotas-mock"
LABEL = "[mock]"


class MockTransport(httpx.BaseTransport):
    """Serves POST /chat/completions and /responses (JSON and SSE), POST /embeddings and
    GET /models, deterministically.

    A prompt of at least `cache_min_tokens` tokens seen before is reported as cached, in
    128-token steps, as OpenAI's prompt caching does.

    `latency` (seconds, before an answer and between stream chunks) and `fail` (one of
    FAULTS, "" for none) default to None: read QUOTAS_MOCK_LATENCY and QUOTAS_MOCK_FAIL
    at each request. A marker in the last user message, `[mock-fault:MODE]` or
    `[mock-latency:SECONDS]`, sets them for that request alone; `[mock-first:SECONDS]`
    sets the wait before the answer alone (the time to first token) and
    `[mock-tokens:N]` the reply's length (for tests and benchmarks that drive
    app servers in other processes).
    """

    sleep: Callable[[float], None] = staticmethod(time.sleep)
    # Completion tokens of a reply that max_tokens does not cut short.
    reply_tokens = 20
    # Seconds in the Retry-After of a "429" fault.
    retry_after = 1
    cache_min_tokens = 1024

    def __init__(
        self,
        *,
        latency: float | None = None,
        fail: str | None = None,
        models: tuple[str, ...] = MODELS,
    ) -> None:
        if fail and fail not in FAULTS:
            raise ValueError(f"Unknown mock fault {fail!r}; expected one of {FAULTS}.")
        self.latency = latency
        self.fail = fail
        self.models = models
        self.calls = 0
        self.last_request: dict[str, Any] | None = None
        self._lock = threading.Lock()
        self._prompts: set[str] = set()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        number, fail = self._take(request)
        if fail and fail not in FAULTS:
            return _unknown_fault(fail)
        self._wait(request, self._first_latency(request))
        return self._respond(request, number, fail)

    def _take(self, request: httpx.Request) -> tuple[int, str]:
        """(the call's number, its fault mode) for a new request."""
        with self._lock:
            self.calls += 1
            number = self.calls
        fail = os.environ.get("QUOTAS_MOCK_FAIL", "") if self.fail is None else self.fail
        return number, _markers(request).get("fault", fail)

    def _respond(self, request: httpx.Request, number: int, fail: str) -> httpx.Response:
        """The answer, once the latency before it has passed."""
        if fail == "timeout":
            raise httpx.ReadTimeout("mock provider: timed out", request=request)
        if fail == "500":
            return _error(500, "The mock provider failed (fault mode 500).", "server_error")
        if fail == "429":
            message = "Rate limit reached (mock provider, fault mode 429)."
            headers = {"retry-after": str(self.retry_after)}
            return _error(429, message, "requests", "rate_limit_exceeded", headers)
        path = request.url.path.rstrip("/")
        if request.method == "GET" and path.endswith("/models"):
            if fail == "malformed":
                return httpx.Response(200, headers=_JSON, content=_MALFORMED)
            data = [
                {"id": m, "object": "model", "created": 0, "owned_by": FINGERPRINT}
                for m in self.models
            ]
            return httpx.Response(200, headers=_JSON, json={"object": "list", "data": data})
        if request.method == "POST" and path.endswith("/chat/completions"):
            return self._chat(request, number, fail)
        if request.method == "POST" and path.endswith("/responses"):
            return self._responses(request, number, fail)
        if request.method == "POST" and path.endswith("/embeddings"):
            return self._embeddings(request, fail)
        return _error(
            404, f"Unknown URL {request.method} {path} (mock provider).", "invalid_request_error"
        )

    def _latency(self, request: httpx.Request | None = None) -> float:
        marked = _markers(request).get("latency") if request is not None else None
        if marked is not None:
            try:
                return max(0.0, float(marked))
            except ValueError:
                return 0.0
        if self.latency is not None:
            return self.latency
        try:
            return max(0.0, float(os.environ.get("QUOTAS_MOCK_LATENCY") or 0))
        except ValueError:
            return 0.0

    def _first_latency(self, request: httpx.Request) -> float:
        """Seconds before the answer: `[mock-first:SECONDS]`, else the latency."""
        marked = _markers(request).get("first")
        try:
            return max(0.0, float(marked)) if marked is not None else self._latency(request)
        except ValueError:
            return self._latency(request)

    def _reply_tokens(self, request: httpx.Request) -> int:
        """Completion tokens of a reply that max_tokens does not cut short."""
        marked = _markers(request).get("tokens")
        if marked is not None and marked.isdigit() and 0 < int(marked) <= 10_000:
            return int(marked)
        return self.reply_tokens

    def _wait(self, request: httpx.Request, seconds: float) -> None:
        """Sleep, or time out as a real connection would when the read timeout is shorter."""
        if seconds <= 0:
            return
        timeout = (request.extensions.get("timeout") or {}).get("read")
        if timeout is not None and seconds > timeout:
            self.sleep(timeout)
            raise httpx.ReadTimeout("mock provider: timed out", request=request)
        self.sleep(seconds)

    def _chat(self, request: httpx.Request, number: int, fail: str) -> httpx.Response:
        try:
            body = json.loads(request.read())
        except ValueError:
            return _error(400, "The request body is not valid JSON.", "invalid_request_error")
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return _invalid("messages", "'messages' must be a list.")
        if not isinstance(body.get("model"), str):
            return _invalid("model", "'model' must be a string.")
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        if limit is not None and (not isinstance(limit, int) or limit < 1):
            return _invalid("max_tokens", "'max_tokens' must be a positive integer.")
        choices = body.get("n") or 1
        if not isinstance(choices, int) or choices < 1:
            return _invalid("n", "'n' must be a positive integer.")
        self.last_request = body
        model, messages = body["model"], body["messages"]
        length = self._reply_tokens(request)
        target = min(length, limit) if limit else length
        reply = answer(
            body,
            messages,
            model,
            reply_words(messages, model, target),
            target < length,
            target,
        )
        words = reply.words
        completion = reply.tokens(model) * choices
        finish = "tool_calls" if reply.tool_call else "length" if reply.cut_short else "stop"
        call: dict[str, Any] | None = None
        if reply.tool_call is not None:
            function = {"name": reply.tool_call.name, "arguments": reply.tool_call.arguments}
            call = {"id": f"call_mock_{number:06d}", "type": "function", "function": function}
        prompt, cached = self._prompt(messages, model, body)
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached},
        }
        cut = fail == "cut"
        head = {
            "id": f"chatcmpl-mock-{number:06d}",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": FINGERPRINT,
        }
        if fail == "malformed":
            if body.get("stream"):
                sse = {"content-type": "text/event-stream"}
                return httpx.Response(200, headers=sse, content=b"data: " + _MALFORMED + b"\n\n")
            return httpx.Response(200, headers=_JSON, content=_MALFORMED)
        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": reply.text, "refusal": None}
            if call is not None:
                message.update(content=None, tool_calls=[call])
            choice: dict[str, Any] = {"message": message, "logprobs": None, "finish_reason": finish}
            completion_object = {
                **head,
                "object": "chat.completion",
                "choices": [{"index": i, **choice} for i in range(choices)],
                "usage": usage,
            }
            data = json.dumps(completion_object).encode()
            if cut:
                half = len(data) // 2
                return httpx.Response(200, headers=_JSON, stream=_Body(self, [data[:half]], True))
            return httpx.Response(200, headers=_JSON, content=data)

        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        chunks: list[dict[str, Any]] = []
        for index in range(choices):
            deltas: list[dict[str, Any]] = [{"role": "assistant", "content": ""}]
            deltas += [{"content": w} for w in words]
            if call is not None:
                opened = {**call, "index": 0, "function": {**call["function"], "arguments": ""}}
                arguments = {"index": 0, "function": {"arguments": call["function"]["arguments"]}}
                deltas = [
                    {"role": "assistant", "content": None, "tool_calls": [opened]},
                    {"tool_calls": [arguments]},
                ]
            for delta, last in itertools.chain(((d, None) for d in deltas), [({}, finish)]):
                piece: dict[str, Any] = {
                    "index": index,
                    "delta": delta,
                    "logprobs": None,
                    "finish_reason": last,
                }
                chunks.append({"choices": [piece]})
        if include_usage:
            chunks = [{**c, "usage": None} for c in chunks] + [{"choices": [], "usage": usage}]
        events = [
            b"data: "
            + json.dumps({**head, "object": "chat.completion.chunk", **c}).encode()
            + b"\n\n"
            for c in chunks
        ]
        events.append(b"data: [DONE]\n\n")
        if cut:
            events = events[: max(2, (len(words) + 1) // 2 + 1)]
        stream = _Body(self, events, cut, request=request)
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=stream)

    def _prompt(self, messages: list[Any], model: str, body: dict[str, Any]) -> tuple[int, int]:
        """(prompt tokens, the cached part of them)."""
        billed = [body[k] for k in BILLED if body.get(k) is not None]
        prompt = count_prompt_tokens(messages, model, billed)
        key = json.dumps([model, messages, billed], sort_keys=True, default=str)
        with self._lock:
            seen = key in self._prompts
            self._prompts.add(key)
        cached = prompt - prompt % 128 if seen and prompt >= self.cache_min_tokens else 0
        return prompt, cached

    def _responses(self, request: httpx.Request, number: int, fail: str) -> httpx.Response:
        try:
            body = json.loads(request.read())
        except ValueError:
            return _error(400, "The request body is not valid JSON.", "invalid_request_error")
        if not isinstance(body, dict) or not isinstance(body.get("input"), str | list):
            return _invalid("input", "'input' must be a string or a list of items.")
        if not isinstance(body.get("model"), str):
            return _invalid("model", "'model' must be a string.")
        limit = body.get("max_output_tokens")
        if limit is not None and (not isinstance(limit, int) or limit < 1):
            return _invalid("max_output_tokens", "'max_output_tokens' must be a positive integer.")
        self.last_request = body
        model = body["model"]
        messages = input_messages(body.get("instructions"), body["input"])
        length = self._reply_tokens(request)
        target = min(length, limit) if limit else length
        words = reply_words(messages, model, target)
        reply = answer(body, messages, model, words, target < length, target)
        prompt, cached = self._prompt(messages, model, body)
        usage = response_usage(prompt, cached, reply.tokens(model))
        final = response_object(number, body, reply, usage)
        if fail == "malformed":
            return httpx.Response(200, headers=_JSON, content=_MALFORMED)
        if not body.get("stream"):
            return httpx.Response(200, headers=_JSON, json=final)
        events = response_events(final, reply.words)
        cut = fail == "cut"
        if cut:
            events = events[: max(5, len(events) // 2)]
        stream = _Body(self, events, cut, request=request)
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=stream)

    def _embeddings(self, request: httpx.Request, fail: str) -> httpx.Response:
        try:
            body = json.loads(request.read())
        except ValueError:
            return _error(400, "The request body is not valid JSON.", "invalid_request_error")
        if not isinstance(body, dict):
            return _error(400, "The request body must be an object.", "invalid_request_error")
        try:
            embeddings.check_request(body)
            items = embeddings.inputs(body.get("input"))
            tokens = embeddings.input_tokens(items, body["model"])
        except InvalidRequest as exc:
            return _invalid(exc.param or "input", exc.message)
        if fail == "malformed":
            return httpx.Response(200, headers=_JSON, content=_MALFORMED)
        self.last_request = body
        return httpx.Response(200, headers=_JSON, json=embeddings_answer(body, items, tokens))


class _Body(httpx.SyncByteStream):
    """A response body sent part by part, with the latency between parts; cut if told."""

    def __init__(
        self,
        transport: MockTransport,
        parts: list[bytes],
        cut: bool,
        request: httpx.Request | None = None,
    ) -> None:
        self.transport, self.parts, self.cut, self.request = transport, parts, cut, request

    def gap(self) -> float:
        """Seconds between parts (read once per response)."""
        return 0.0 if self.request is None else self.transport._latency(self.request)

    def __iter__(self) -> Iterator[bytes]:
        gap = self.gap()
        for i, part in enumerate(self.parts):
            if i and self.request is not None:
                self.transport._wait(self.request, gap)
            yield part
        if self.cut:
            raise httpx.RemoteProtocolError(
                "peer closed connection without sending complete message body (mock provider)"
            )


def reply_words(messages: list[Any], model: str, max_tokens: int) -> list[str]:
    """The reply as its stream pieces: "[mock] Reply to: <the last user message's start>"
    repeated to at most `max_tokens` tokens."""
    echo = [" Reply", " to:"] + [f" {w}" for w in _last_user_text(messages).split()[:8]]
    words: list[str] = []
    pieces = itertools.chain([LABEL], itertools.cycle(echo))
    for word in itertools.islice(pieces, 10 * max_tokens):
        if count_text_tokens("".join([*words, word]), model) > max_tokens:
            break
        words.append(word)
    if not words:  # not even the label fits: as much of it as does
        label = LABEL
        while label and count_text_tokens(label, model) > max_tokens:
            label = label[:-1]
        words = [label] if label else []
    return words


def _last_user_text(messages: list[Any]) -> str:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                parts = [p.get("text", "") for p in content if isinstance(p, dict)]
                return " ".join(str(p) for p in parts if p)
            return str(content or "")
    return ""


MARKER = re.compile(r"\[mock-(fault|latency|first|tokens):([\w.]+)\]")


def _markers(request: httpx.Request) -> dict[str, str]:
    """Per-request fault and latency markers in the last user message."""
    if request.method != "POST":
        return {}
    try:
        body = json.loads(request.read())
    except ValueError:
        return {}
    if not isinstance(body, dict):
        return {}
    value = body.get("input")  # a Responses or an embeddings input
    if isinstance(body.get("messages"), list):
        text = _last_user_text(body["messages"])
    elif isinstance(value, str):
        text = value
    elif isinstance(value, list):
        strings = " ".join(item for item in value if isinstance(item, str))
        text = strings or _last_user_text(input_messages(None, value))
    else:
        return {}
    return dict(MARKER.findall(text))


_JSON = {"content-type": "application/json"}
_MALFORMED = b'{"id": "chatcmpl-mock", "choi'


def _invalid(param: str, message: str) -> httpx.Response:
    return _error(400, message, "invalid_request_error", param=param)


def _error(
    status: int,
    message: str,
    kind: str,
    code: str | None = None,
    headers: dict[str, str] | None = None,
    param: str | None = None,
) -> httpx.Response:
    error = {"message": message, "type": kind, "param": param, "code": code}
    return httpx.Response(status, headers={**_JSON, **(headers or {})}, json={"error": error})


def _unknown_fault(fail: str) -> httpx.Response:
    return _error(
        500, f"Mock fault {fail!r} (QUOTAS_MOCK_FAIL) is not one of {FAULTS}.", "server_error"
    )


class AsyncMockTransport(httpx.AsyncBaseTransport):
    """The same mock for `openai.AsyncOpenAI`, waiting on the event loop: a stream's parts
    are sent one by one, so thousands of slow streams need no thread each."""

    def __init__(self, mock: MockTransport) -> None:
        self.mock = mock

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        number, fail = self.mock._take(request)
        if fail and fail not in FAULTS:
            return _unknown_fault(fail)
        await _async_wait(request, self.mock._first_latency(request))
        response = self.mock._respond(request, number, fail)
        if isinstance(response.stream, _Body):
            stream = _AsyncBody(response.stream)
            return httpx.Response(
                response.status_code, headers=response.headers, stream=stream, request=request
            )
        return httpx.Response(
            response.status_code, headers=response.headers, content=response.read(), request=request
        )


async def _async_wait(request: httpx.Request, seconds: float) -> None:
    """`MockTransport._wait` on the event loop."""
    if seconds <= 0:
        return
    timeout = (request.extensions.get("timeout") or {}).get("read")
    if timeout is not None and seconds > timeout:
        await asyncio.sleep(timeout)
        raise httpx.ReadTimeout("mock provider: timed out", request=request)
    await asyncio.sleep(seconds)


class _AsyncBody(httpx.AsyncByteStream):
    """A `_Body` sent on the event loop."""

    def __init__(self, body: _Body) -> None:
        self.body = body

    async def __aiter__(self) -> AsyncIterator[bytes]:
        body = self.body
        gap = body.gap()
        for i, part in enumerate(body.parts):
            if i and body.request is not None:
                await _async_wait(body.request, gap)
            yield part
        if body.cut:
            raise httpx.RemoteProtocolError(
                "peer closed connection without sending complete message body (mock provider)"
            )
