"""Real openai SDK clients whose chat completions are metered for one user.

`chat.completions.create` reserves with `quotas.reserve` (the tier's model rules and
output cap applied), calls the provider, and settles to the reported usage; a stream
settles when it ends or is closed. Over quota it raises `QuotaExceeded` and the provider
is not called.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import openai

from . import upstream
from .calls import AsyncMeteredCall, MeteredCall, areserve, reserve, reserve_arguments
from .conf import conf


def _given(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The arguments actually passed (the SDK's NOT_GIVEN / omit sentinels dropped)."""
    return {k: v for k, v in kwargs.items() if not isinstance(v, openai.NotGiven | openai.Omit)}


def _send_arguments(kwargs: dict[str, Any], call: MeteredCall) -> dict[str, Any]:
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


class _StreamMeter:
    """What a stream delivered, and its usage chunk."""

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


class MeteredStream:
    """An `openai.Stream` that settles the call when it ends or is closed."""

    def __init__(self, stream: Any, call: MeteredCall, show_usage: bool) -> None:
        self._stream = stream
        self._call = call
        self._meter = _StreamMeter(show_usage)

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
            self._call.settle(self._meter.usage, completion_text="".join(self._meter.delivered))

    def __enter__(self) -> MeteredStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class AsyncMeteredStream:
    """An `openai.AsyncStream` that settles the call when it ends or is closed."""

    def __init__(self, stream: Any, call: AsyncMeteredCall, show_usage: bool) -> None:
        self._stream = stream
        self._call = call
        self._meter = _StreamMeter(show_usage)

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
            text = "".join(self._meter.delivered)
            await self._call.settle(self._meter.usage, completion_text=text)

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


def metered_openai(user: Any, **client_kwargs: Any) -> openai.OpenAI:
    """An `openai.OpenAI` for the configured provider whose chat completions `user` pays for."""
    settings = {**_provider_settings(client_kwargs), **client_kwargs}
    if settings.get("base_url") == upstream.MOCK_BASE_URL and "http_client" not in settings:
        settings["http_client"] = upstream.mock_http_client()
    client = openai.OpenAI(**settings)
    completions = client.chat.completions
    create = completions.create

    def metered_create(**kwargs: Any) -> Any:
        kwargs = _given(kwargs)
        call = reserve(user, **reserve_arguments(kwargs))
        try:
            result = create(**_send_arguments(kwargs, call))
        except BaseException:
            call.refund()
            raise
        if kwargs.get("stream") is True:
            return MeteredStream(result, call, _wants_usage(kwargs))
        call.settle(getattr(result, "usage", None), completion_text=_text(result))
        return result

    completions.create = metered_create  # type: ignore[method-assign]
    return client


def metered_async_openai(user: Any, **client_kwargs: Any) -> openai.AsyncOpenAI:
    """An `openai.AsyncOpenAI` whose chat completions `user` pays for (see metered_openai)."""
    settings = {**_provider_settings(client_kwargs), **client_kwargs}
    if settings.get("base_url") == upstream.MOCK_BASE_URL and "http_client" not in settings:
        settings["http_client"] = upstream.mock_async_http_client()
    client = openai.AsyncOpenAI(**settings)
    completions = client.chat.completions
    create = completions.create

    async def metered_create(**kwargs: Any) -> Any:
        kwargs = _given(kwargs)
        metered = areserve(user, **reserve_arguments(kwargs))
        await metered.__aenter__()
        try:
            result = await create(**_send_arguments(kwargs, metered.call))
        except BaseException:
            await metered.refund()
            raise
        if kwargs.get("stream") is True:
            return AsyncMeteredStream(result, metered, _wants_usage(kwargs))
        await metered.settle(getattr(result, "usage", None), completion_text=_text(result))
        return result

    completions.create = metered_create  # type: ignore[method-assign]
    return client
