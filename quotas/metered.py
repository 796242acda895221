"""Real openai SDK clients whose chat completions, responses and embeddings are metered
for one user.

`chat.completions.create`, `responses.create` and `embeddings.create` reserve with
`quotas.reserve` (the tier's model rules and output cap applied), call the provider, and
settle to the reported usage; a stream settles when it ends or is closed. Over quota they
raise `QuotaExceeded` and the provider is not called.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import openai

from . import embeddings, responses, upstream
from .calls import AsyncMeteredCall, MeteredCall, areserve, reserve, reserve_arguments
from .conf import conf


def _given(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The arguments actually passed (the SDK's NOT_GIVEN / omit sentinels dropped)."""
    return {k: v for k, v in kwargs.items() if not isinstance(v, openai.NotGiven | openai.Omit)}


def _send_arguments(call: MeteredCall, kwargs: dict[str, Any]) -> dict[str, Any]:
    send = call.provider_request(kwargs)
    if kwargs.get("stream") is True:
        options = kwargs.get("stream_options") or {}
        send["stream_options"] = {**options, "include_usage": True}
    return send


def _text(completion: Any) -> str:
    parts = []
    for choice in getattr(completion, "choices", None) or []:
        content = getattr(getattr(choice, "message", None), "content", None)
        if isinstance(content, str):
            parts.append(content)
    return "".join(parts)


def _wants_usage(kwargs: dict[str, Any]) -> bool:
    return bool((kwargs.get("stream_options") or {}).get("include_usage"))


class Meter(Protocol):
    """What a stream delivered (`text`) and its usage, as its items pass."""

    usage: Any

    @property
    def text(self) -> str: ...

    def keep(self, item: Any) -> bool: ...


class _StreamMeter:
    """What a chat stream delivered, and its usage chunk."""

    def __init__(self, show_usage: bool) -> None:
        self.show_usage = show_usage
        self.usage: Any = None
        self.delivered: list[str] = []

    def keep(self, chunk: Any) -> bool:
        """Record `chunk`; False for the usage-only chunk the caller did not ask for."""
        usage = getattr(chunk, "usage", None)
        if usage is not None:
            self.usage = usage
        choices = getattr(chunk, "choices", None) or []
        for choice in choices:
            content = getattr(getattr(choice, "delta", None), "content", None)
            if isinstance(content, str):
                self.delivered.append(content)
        return bool(choices) or usage is None or self.show_usage

    @property
    def text(self) -> str:
        return "".join(self.delivered)


class MeteredStream:
    """An `openai.Stream` that settles the call when it ends or is closed."""

    def __init__(self, stream: Any, call: MeteredCall, meter: Meter) -> None:
        self._stream = stream
        self._call = call
        self._meter = meter

    def __iter__(self) -> Iterator[Any]:
        try:
            for chunk in self._stream:
                if self._meter.keep(chunk):
                    yield chunk
        finally:
            self.close()

    def close(self) -> None:
        if self._call.done:
            return
        try:
            self._stream.close()
        finally:
            self._call.settle(self._meter.usage, completion_text=self._meter.text)

    def __enter__(self) -> MeteredStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class AsyncMeteredStream:
    """An `openai.AsyncStream` that settles the call when it ends or is closed."""

    def __init__(self, stream: Any, call: AsyncMeteredCall, meter: Meter) -> None:
        self._stream = stream
        self._call = call
        self._meter = meter

    async def __aiter__(self) -> AsyncIterator[Any]:
        try:
            async for chunk in self._stream:
                if self._meter.keep(chunk):
                    yield chunk
        finally:
            await self.close()

    async def close(self) -> None:
        if self._call.call.done:
            return
        try:
            await self._stream.close()
        finally:
            await self._call.settle(self._meter.usage, completion_text=self._meter.text)

    async def __aenter__(self) -> AsyncMeteredStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _provider_settings(client_kwargs: dict[str, Any]) -> dict[str, Any]:
    """The configured provider's client settings; none needed when the caller names a
    provider of their own (its base URL and key)."""
    if "base_url" in client_kwargs and "api_key" in client_kwargs:
        return {"timeout": conf.UPSTREAM_TIMEOUT, "max_retries": 0}
    return upstream.client_settings()


@dataclass(frozen=True)
class Endpoint:
    """How one SDK method is metered: its reservation, what the provider is sent, how
    its stream is read and what its answer delivered."""

    reserve_arguments: Callable[[dict[str, Any]], dict[str, Any]]
    provider_request: Callable[[MeteredCall, dict[str, Any]], dict[str, Any]]
    meter: Callable[[dict[str, Any]], Meter]
    delivered: Callable[[Any], str]


ENDPOINTS = {
    ("chat", "completions"): Endpoint(
        reserve_arguments, _send_arguments, lambda kw: _StreamMeter(_wants_usage(kw)), _text
    ),
    ("responses",): Endpoint(
        responses.reserve_arguments,
        responses.provider_request,
        lambda kw: responses.EventMeter(),
        responses.output_text,
    ),
    ("embeddings",): Endpoint(
        embeddings.reserve_arguments,
        lambda call, kw: {**kw, "model": call.model},
        lambda kw: _StreamMeter(False),
        lambda result: "",
    ),
}


def _resource(client: Any, path: tuple[str, ...]) -> Any:
    for name in path:
        client = getattr(client, name)
    return client


def _metered(user: Any, create: Any, endpoint: Endpoint) -> Callable[..., Any]:
    def metered_create(**kwargs: Any) -> Any:
        kwargs = _given(kwargs)
        call = reserve(user, **endpoint.reserve_arguments(kwargs))
        try:
            result = create(**endpoint.provider_request(call, kwargs))
        except BaseException:
            call.refund()
            raise
        if kwargs.get("stream") is True:
            return MeteredStream(result, call, endpoint.meter(kwargs))
        call.settle(getattr(result, "usage", None), completion_text=endpoint.delivered(result))
        return result

    return metered_create


def _ametered(user: Any, create: Any, endpoint: Endpoint) -> Callable[..., Any]:
    async def metered_create(**kwargs: Any) -> Any:
        kwargs = _given(kwargs)
        metered = areserve(user, **endpoint.reserve_arguments(kwargs))
        await metered.__aenter__()
        try:
            result = await create(**endpoint.provider_request(metered.call, kwargs))
        except BaseException:
            await metered.refund()
            raise
        if kwargs.get("stream") is True:
            return AsyncMeteredStream(result, metered, endpoint.meter(kwargs))
        text = endpoint.delivered(result)
        await metered.settle(getattr(result, "usage", None), completion_text=text)
        return result

    return metered_create


def metered_openai(user: Any, **client_kwargs: Any) -> openai.OpenAI:
    """An `openai.OpenAI` for the configured provider whose chat completions, responses
    and embeddings `user` pays for."""
    settings = {**_provider_settings(client_kwargs), **client_kwargs}
    if settings.get("base_url") == upstream.MOCK_BASE_URL and "http_client" not in settings:
        settings["http_client"] = upstream.mock_http_client()
    client = openai.OpenAI(**settings)
    for path, endpoint in ENDPOINTS.items():
        resource = _resource(client, path)
        resource.create = _metered(user, resource.create, endpoint)
    return client


def metered_async_openai(user: Any, **client_kwargs: Any) -> openai.AsyncOpenAI:
    """An `openai.AsyncOpenAI` whose calls `user` pays for (see metered_openai)."""
    settings = {**_provider_settings(client_kwargs), **client_kwargs}
    if settings.get("base_url") == upstream.MOCK_BASE_URL and "http_client" not in settings:
        settings["http_client"] = upstream.mock_async_http_client()
    client = openai.AsyncOpenAI(**settings)
    for path, endpoint in ENDPOINTS.items():
        resource = _resource(client, path)
        resource.create = _ametered(user, resource.create, endpoint)
    return client
