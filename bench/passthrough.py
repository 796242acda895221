"""A bare async pass-through proxy with no quotas: the floor of the streams bench.

`uvicorn bench.passthrough:app`: POST /v1/chat/completions goes as it is to the same
in-process mock provider the project uses, through the openai SDK's async client, and its
stream comes back as server-sent events. No Django, no authentication, no counting.
"""

from __future__ import annotations

import json
from typing import Any

import openai

from quotas.mock_provider import AsyncMockTransport, MockTransport, httpx

_client: openai.AsyncOpenAI | None = None


def client() -> openai.AsyncOpenAI:
    global _client
    if _client is None:
        transport = AsyncMockTransport(MockTransport(latency=0.0, fail=""))
        _client = openai.AsyncOpenAI(
            api_key="mock",
            base_url="http://mock-provider.invalid/v1",
            http_client=httpx.AsyncClient(transport=transport),
            max_retries=0,
            timeout=600,
        )
    return _client


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if scope["method"] != "POST" or scope["path"] != "/v1/chat/completions":
        await _answer(send, 404, b'{"error": {"message": "not found"}}')
        return
    params = json.loads(body)
    params.pop("stream", None)
    stream = await client().chat.completions.create(**params, stream=True)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/event-stream")],
        }
    )
    try:
        async for chunk in stream:
            event = f"data: {chunk.to_json(indent=None)}\n\n".encode()
            await send({"type": "http.response.body", "body": event, "more_body": True})
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})
    finally:
        await stream.close()


async def _answer(send: Any, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
