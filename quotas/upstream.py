"""The provider call: one openai SDK path, to the real provider or the built-in mock."""

from __future__ import annotations

import asyncio
import email.utils
import logging
import os
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any

import openai
from django.conf import settings

try:  # openai 3.x speaks httpx2; earlier versions httpx.
    import httpx2 as httpx
except ImportError:  # pragma: no cover
    import httpx  # type: ignore[no-redef]

from . import providers
from .conf import conf
from .engine import CountersUnavailable, Limit, Policy, QuotaEngine
from .engine.limits import RATE_REQUESTS, RATE_TOKENS
from .mock_provider import AsyncMockTransport, MockTransport
from .models import Provider

logger = logging.getLogger("quotas")

MOCK_BASE_URL = "http://mock-provider.invalid/v1"

CHAT_PATH = "/chat/completions"


class UpstreamError(Exception):
    """The provider failed, or answered something unusable (`status` 502 without an answer)."""

    def __init__(
        self, status: int, message: str, *, error: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error = dict(error or {})  # the provider's own `error` object, if any


class UpstreamNotConfigured(UpstreamError):
    """No provider to call: no OPENAI_API_KEY, DEBUG off, and the mock not chosen; or a
    model's provider whose key variable is not set."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(
            503,
            message
            or "No AI provider is configured on this server: set OPENAI_API_KEY, "
            "or QUOTAS['PROVIDER'] = 'mock'.",
        )


class UpstreamTimeout(UpstreamError):
    def __init__(self, message: str = "The AI provider did not answer in time.") -> None:
        super().__init__(504, message)


class UpstreamRateLimited(UpstreamError):
    def __init__(
        self,
        retry_after: float | None,
        message: str = "The AI provider is rate limiting requests.",
        *,
        error: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(429, message, error=error)
        self.retry_after = retry_after


class UpstreamBusy(UpstreamRateLimited):
    """The provider's limits, as counted here, leave no room within the allowed wait."""

    retry_after: float

    def __init__(self, retry_after: float, model: str) -> None:
        message = (
            f"The AI provider's rate limit for {model} is reached; retry after {retry_after:.1f}s."
        )
        super().__init__(retry_after, message)


# the client ---------------------------------------------------------------------------

_lock = threading.RLock()
_client: openai.OpenAI | None = None
_mock: MockTransport | None = None
# Each event loop's async clients, by provider (its connections belong to that loop).
_async_clients: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[tuple[Any, ...], openai.AsyncOpenAI]
] = weakref.WeakKeyDictionary()


def client(provider: Provider | None = None) -> openai.OpenAI:
    """The SDK client for `provider` (a model's), else this process's default one
    (OPENAI_API_KEY / OPENAI_BASE_URL, else the mock provider)."""
    global _client
    if provider is not None:
        try:
            return providers.client_for(provider)
        except providers.MissingKey as exc:
            raise UpstreamNotConfigured(str(exc)) from None
    if _client is None:
        with _lock:
            if _client is None:
                _client = _build_client()
    return _client


def uses_mock() -> bool:
    """Whether calls go to the built-in mock: chosen, or no key while DEBUG is on."""
    if conf.PROVIDER == "mock":
        return True
    return not os.environ.get("OPENAI_API_KEY") and settings.DEBUG


def provider_configured() -> bool:
    """Whether there is a provider to call (a key, or the mock)."""
    return uses_mock() or bool(os.environ.get("OPENAI_API_KEY"))


def _build_client() -> openai.OpenAI:
    settings = client_settings()
    if settings.get("base_url") == MOCK_BASE_URL:
        logger.warning("quotas: answering with the built-in mock provider (no real AI provider)")
        settings["http_client"] = mock_http_client()
    return openai.OpenAI(**settings)


def client_settings() -> dict[str, Any]:
    """The SDK client's settings: OPENAI_API_KEY / OPENAI_BASE_URL (read by the SDK), or
    the mock provider's when it is chosen (its client needs `mock_http_client()`).

    Raises UpstreamNotConfigured when there is neither a key nor a chosen mock.
    """
    settings: dict[str, Any] = {"timeout": conf.UPSTREAM_TIMEOUT, "max_retries": 0}
    if uses_mock():
        settings.update(api_key="mock", base_url=MOCK_BASE_URL)
    elif not os.environ.get("OPENAI_API_KEY"):
        raise UpstreamNotConfigured()
    return settings


def mock_http_client() -> httpx.Client:
    """An HTTP client for `openai.OpenAI` that talks to this process's mock provider."""
    return httpx.Client(transport=mock_transport())


def mock_async_http_client() -> httpx.AsyncClient:
    """The same for `openai.AsyncOpenAI`."""
    return httpx.AsyncClient(transport=AsyncMockTransport(mock_transport()))


def async_client(provider: Provider | None = None) -> openai.AsyncOpenAI:
    """The running event loop's async SDK client for `provider`, as `client` (a new one
    when its settings or key change); its connections belong to that loop."""
    if provider is not None:
        try:
            settings = providers.client_settings(provider)
        except providers.MissingKey as exc:
            raise UpstreamNotConfigured(str(exc)) from None
        identity: tuple[Any, ...] = (provider.pk, *sorted(settings.items()))
    else:
        settings = client_settings()
        identity = ()
    loop = asyncio.get_running_loop()
    with _lock:
        clients = _async_clients.setdefault(loop, {})
        found = clients.get(identity)
        if found is None:
            if settings.get("base_url") == MOCK_BASE_URL:
                settings["http_client"] = mock_async_http_client()
            found = clients[identity] = openai.AsyncOpenAI(**settings)
    return found


def mock_transport() -> MockTransport:
    """The mock provider this process's client talks to when OPENAI_API_KEY is not set."""
    global _mock
    with _lock:
        if _mock is None:
            _mock = MockTransport()
        return _mock


def reset_client() -> None:
    """Forget the client and the mock (tests changing the environment)."""
    global _client, _mock
    with _lock:
        _client = _mock = None
        _async_clients.clear()
    providers.reset_clients()


# calls --------------------------------------------------------------------------------


def chat(params: dict[str, Any], provider: Provider | None = None) -> dict[str, Any]:
    """One chat completion; the provider's JSON answer. `provider`: the model's, if any."""
    body = _chat_body(params, stream=False)
    try:
        answer = client(provider).post(
            CHAT_PATH, body=body, cast_to=object, options=_options(provider)
        )
    except (openai.APIError, ValueError) as exc:
        raise _translate(exc) from exc
    return _completion(answer)


def _completion(answer: object) -> dict[str, Any]:
    if not isinstance(answer, dict) or not isinstance(answer.get("choices"), list):
        raise UpstreamError(502, "The AI provider answered with something other than a completion.")
    return answer


def chat_stream(
    params: dict[str, Any], provider: Provider | None = None
) -> Iterator[dict[str, Any]]:
    """A streamed chat completion, chunk by chunk, the last one with `usage`.

    Connects at once (so refusals raise here); a failure mid-stream raises from the iterator.
    """
    body = _chat_body(params, stream=True)
    try:
        stream = client(provider).post(
            CHAT_PATH,
            body=body,
            cast_to=object,
            options=_options(provider),
            stream=True,
            stream_cls=openai.Stream[object],
        )
    except (openai.APIError, ValueError) as exc:
        raise _translate(exc) from exc
    return _chunks(stream)


def _chunks(stream: openai.Stream[Any]) -> Iterator[dict[str, Any]]:
    try:
        for chunk in stream:
            yield _as_dict(chunk)
    except (openai.APIError, ValueError) as exc:
        raise _translate(exc) from exc
    finally:
        stream.close()


def _as_dict(chunk: Any) -> dict[str, Any]:
    """A chunk as sent (the chat calls ask the SDK for plain JSON) or a typed event's dict."""
    if isinstance(chunk, dict):
        return chunk
    result: dict[str, Any] = chunk.to_dict(mode="json")
    return result


async def achat(params: dict[str, Any], provider: Provider | None = None) -> dict[str, Any]:
    """`chat` on the running event loop."""
    body = _chat_body(params, stream=False)
    try:
        answer = await async_client(provider).post(
            CHAT_PATH, body=body, cast_to=object, options=_options(provider)
        )
    except (openai.APIError, ValueError) as exc:
        raise _translate(exc) from exc
    return _completion(answer)


async def achat_stream(
    params: dict[str, Any], provider: Provider | None = None
) -> AsyncProviderStream:
    """`chat_stream` on the running event loop."""
    body = _chat_body(params, stream=True)
    try:
        stream = await async_client(provider).post(
            CHAT_PATH,
            body=body,
            cast_to=object,
            options=_options(provider),
            stream=True,
            stream_cls=openai.AsyncStream[object],
        )
    except (openai.APIError, ValueError) as exc:
        raise _translate(exc) from exc
    return AsyncProviderStream(stream)


class AsyncProviderStream:
    """A provider stream's chunks as dicts; `aclose()` closes the provider's connection."""

    def __init__(self, stream: openai.AsyncStream[Any]) -> None:
        self.stream = stream

    async def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        try:
            async for chunk in self.stream:
                yield _as_dict(chunk)
        except (openai.APIError, ValueError) as exc:
            raise _translate(exc) from exc

    async def aclose(self) -> None:
        await self.stream.close()


def responses(params: dict[str, Any], provider: Provider | None = None) -> dict[str, Any]:
    """One Responses API call; the provider's JSON answer."""
    arguments = _passed_through(params, provider, stream=False)
    try:
        raw = client(provider).responses.with_raw_response.create(**arguments)
        answer = raw.http_response.json()
    except (openai.APIError, ValueError) as exc:
        raise _translate(exc) from exc
    if not isinstance(answer, dict) or not isinstance(answer.get("output"), list):
        raise UpstreamError(502, "The AI provider answered with something other than a response.")
    return answer


def responses_stream(
    params: dict[str, Any], provider: Provider | None = None
) -> Iterator[dict[str, Any]]:
    """A streamed Responses API call, event by event (`type` in each), as `chat_stream`."""
    arguments = _passed_through(params, provider, stream=True)
    try:
        stream = client(provider).responses.create(**arguments)
    except (openai.APIError, ValueError) as exc:
        raise _translate(exc) from exc
    return _chunks(stream)


def embeddings(params: dict[str, Any], provider: Provider | None = None) -> dict[str, Any]:
    """One embeddings call; the provider's JSON answer (floats unless base64 is asked)."""
    arguments = _passed_through(params, provider, stream=False)
    extra = arguments.pop("extra_body", {})
    arguments["model"], arguments["input"] = extra.pop("model", None), extra.pop("input", None)
    arguments["encoding_format"] = extra.pop("encoding_format", None) or "float"
    if extra:
        arguments["extra_body"] = extra
    try:
        raw = client(provider).embeddings.with_raw_response.create(**arguments)
        answer = raw.http_response.json()
    except (openai.APIError, ValueError) as exc:
        raise _translate(exc) from exc
    if not isinstance(answer, dict) or not isinstance(answer.get("data"), list):
        raise UpstreamError(502, "The AI provider answered with something other than embeddings.")
    return answer


def _passed_through(
    params: dict[str, Any], provider: Provider | None, *, stream: bool
) -> dict[str, Any]:
    """Every parameter in `extra_body`, as sent, so the SDK neither checks nor drops any."""
    arguments: dict[str, Any] = {"timeout": providers.timeout(provider)}
    extra = {k: v for k, v in params.items() if k != "stream"}
    if stream:
        arguments["stream"] = True
    if extra:
        arguments["extra_body"] = extra
    return arguments


def _chat_body(params: dict[str, Any], *, stream: bool) -> dict[str, Any]:
    """The request body as the caller sent it (the SDK's typed `create()` would rebuild
    every message: a cost per call for nothing, and parameters it does not know kept as
    sent anyway); a stream always asks for the usage."""
    if "model" not in params or "messages" not in params:
        raise ValueError("A chat completion needs 'model' and 'messages'.")
    body = {k: v for k, v in params.items() if k not in ("stream", "stream_options")}
    if stream:
        options = params.get("stream_options")
        body["stream"] = True
        body["stream_options"] = {
            **(options if isinstance(options, dict) else {}),
            "include_usage": True,
        }
    return body


def _options(provider: Provider | None) -> openai.RequestOptions:
    return {"timeout": providers.timeout(provider)}


def _translate(exc: Exception) -> UpstreamError:
    if isinstance(exc, openai.APITimeoutError):
        return UpstreamTimeout()
    if isinstance(exc, openai.APIStatusError):
        error = exc.body if isinstance(exc.body, dict) else {}
        message = str(error.get("message") or f"The AI provider answered {exc.status_code}.")
        if isinstance(exc, openai.RateLimitError):
            return UpstreamRateLimited(retry_after(exc.response.headers), message, error=error)
        return UpstreamError(exc.status_code, message, error=error)
    if isinstance(exc, openai.APIConnectionError):
        return UpstreamError(
            502, f"The connection to the AI provider failed: {exc.__cause__ or exc}"
        )
    if isinstance(exc, openai.APIError):  # e.g. an error event mid-stream
        return UpstreamError(502, f"The AI provider failed: {exc.message}")
    return UpstreamError(502, f"The AI provider answered malformed data: {exc}")


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds a provider asks to wait: `retry-after-ms`, then `retry-after` (seconds or date)."""
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return max(0.0, float(value) / scale)
        except ValueError:
            pass
        try:
            return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            pass
    return None


# the provider's own limits ----------------------------------------------------------------


class UpstreamLimiter:
    """Keeps calls to each model within the provider's per-minute limits, for all app servers.

    An ask above the per-minute token capacity is clamped to it: it waits for a full
    bucket, then the provider has the last word. Reservations here are never settled:
    like OpenAI's own limiter, it counts the estimate (prompt plus max_tokens).
    """

    sleep: Callable[[float], None] = staticmethod(time.sleep)
    # Seconds since the epoch for the counters; None: Redis's clock. Tests set a fake one.
    clock: Callable[[], float] | None = None

    def __init__(self, engine: QuotaEngine) -> None:
        self.engine = engine

    def acquire(
        self,
        model: str,
        requests_per_minute: int | None,
        tokens_per_minute: int | None,
        tokens: int,
        max_wait: float,
    ) -> None:
        """Take one request and `tokens` from `model`'s limits, waiting up to `max_wait` seconds.

        Raises UpstreamBusy at once when the wait would be longer, and CountersUnavailable
        when Redis cannot be reached.
        """
        limits = []
        if requests_per_minute:
            rpm = requests_per_minute
            limits.append(Limit("upstream_requests_per_minute", RATE_REQUESTS, rpm, burst=rpm))
        if tokens_per_minute:
            tpm = tokens_per_minute
            limits.append(Limit("upstream_tokens_per_minute", RATE_TOKENS, tpm, burst=tpm))
            tokens = min(tokens, tpm)
        policy = Policy(limits=tuple(limits), track_usage=False, rehydrate=False)
        timer = self.clock or time.monotonic
        deadline = timer() + max_wait
        while True:
            # One call checks the provider's backoff (a hold on the model) and its limits.
            now = self.clock() if self.clock else None
            decision = self.engine.reserve(subject(model), policy, tokens=tokens, now=now)
            if decision.allowed:
                return
            wait = decision.retry_after
            if timer() + wait > deadline:
                raise UpstreamBusy(wait, model)
            self.sleep(wait)

    def backoff(self, model: str, seconds: float) -> None:
        """Hold every app server's calls to `model` for `seconds` (a provider 429's Retry-After)."""
        if seconds <= 0:
            return
        try:
            self.engine.hold(subject(model), seconds)
        except CountersUnavailable:
            logger.warning("quotas: could not record the provider's backoff")

    def backoff_remaining(self, model: str) -> float:
        """Seconds left of a backoff recorded for `model`; 0 if none."""
        return float(self.engine.hold_remaining(subject(model)))


def subject(model: str) -> str:
    """The counters' subject of a model's provider limits and backoff."""
    return f"upstream:{model}"


def needs_limiter(model: Any, backoff: float | None) -> bool:
    """Whether a call to `model` must go through `UpstreamLimiter.acquire`.

    Not when the model has no provider limits and its backoff, read with the caller's
    reservation (`Decision.watched_hold`; None if it could not be read), is over: then
    acquiring would only find that.
    """
    limited = model.upstream_requests_per_minute or model.upstream_tokens_per_minute
    return bool(limited or backoff is None or backoff > 0)
