"""uvicorn app servers (ASGI): the async views, hundreds of concurrent streams, hang-ups,
and every limit exact across two server processes sharing one Redis."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import openai
import pytest

from quotas.tokens import count_prompt_tokens, count_text_tokens
from tests.event_loop import run_in_fresh_loop

from ..api.conftest import ledger, settled_ledger
from .conftest import _free_port
from .http import call

try:  # openai 3.x speaks httpx2; earlier versions httpx.
    import httpx2 as httpx
except ImportError:  # pragma: no cover
    import httpx  # type: ignore[no-redef]

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

MODEL = "gpt-4o-mini"


def _body(content: str, **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": content}], **extra}


def _events(lines: list[str]) -> list[Any]:
    payloads = [line[len("data: ") :] for line in lines if line.startswith("data: ")]
    return [p if p == "[DONE]" else json.loads(p) for p in payloads]


def _text(events: list[Any]) -> str:
    return "".join(
        choice["delta"].get("content") or ""
        for event in events
        if isinstance(event, dict)
        for choice in event.get("choices", [])
    )


def test_the_async_sdk_client_streams_and_is_charged_the_reported_usage(
    real_redis, asgi_servers, tier_user
):
    user, key = tier_user(tokens_per_day=10_000, requests_per_minute=100, burst=100)
    (base,) = asgi_servers(real_redis, count=1)

    async def run() -> tuple[list[Any], Any, Any]:
        client = openai.AsyncOpenAI(api_key=key, base_url=f"{base}/v1", max_retries=0)
        async with client:
            stream = await client.chat.completions.create(
                **_body("Stream to me"),
                max_tokens=12,
                stream=True,
                stream_options={"include_usage": True},
            )
            chunks = [chunk async for chunk in stream]
            models = await client.models.list()
            reply = await client.chat.completions.create(**_body("Answer at once"), max_tokens=5)
        return chunks, models, reply

    chunks, models, reply = run_in_fresh_loop(run())

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("[mock]")
    usage = chunks[-1].usage
    assert usage.completion_tokens == count_text_tokens(text, MODEL)
    assert [m.id for m in models.data] == [MODEL]
    assert reply.choices[0].message.content.startswith("[mock]")
    # The completion is settled once answered: the client may read the ledger first.
    assert settled_ledger(user, 2) == {
        "requests": 2,
        "prompt": usage.prompt_tokens + reply.usage.prompt_tokens,
        "completion": usage.completion_tokens + reply.usage.completion_tokens,
        "denied": 0,
    }


def test_the_http_contract_is_the_wsgi_one(real_redis, asgi_servers, tier_user):
    _, key = tier_user(requests_per_minute=1, burst=1, max_concurrent_requests=5)
    (base,) = asgi_servers(real_redis, count=1)
    auth = {"Authorization": f"Bearer {key}"}

    def lowered(headers: dict[str, str]) -> dict[str, str]:
        return {k.lower(): v for k, v in headers.items()}

    status, headers, raw = call(f"{base}/v1/quota")
    assert status == 401
    assert lowered(headers)["www-authenticate"] == 'Bearer realm="api"'
    assert json.loads(raw)["error"]["code"] == "invalid_api_key"

    status, _, raw = call(f"{base}/v1/chat/completions", json={"model": 3}, headers=auth)
    assert status == 400
    assert json.loads(raw)["error"]["type"] == "invalid_request_error"

    # Reading the models and the quota charges nothing, however often.
    for path in ("/v1/models", "/v1/quota") * 2:
        status, headers, raw = call(f"{base}{path}", headers=auth)
        assert status == 200, path
        assert lowered(headers)["x-ratelimit-remaining-requests"] == "1", path
    assert json.loads(raw)["limits"]["max_concurrent_requests"]["limit"] == 5

    hello = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}
    assert call(f"{base}/v1/chat/completions", json=hello, headers=auth)[0] == 200
    status, headers, raw = call(f"{base}/v1/chat/completions", json=hello, headers=auth)
    assert status == 429
    refused = lowered(headers)
    assert int(refused["retry-after"]) >= 1
    assert int(refused["retry-after-ms"]) > 0
    assert "x-should-retry" not in refused  # a rate frees up soon
    assert refused["x-ratelimit-limit-requests"] == "1"  # per minute, as set
    assert json.loads(raw)["error"]["code"] == "rate_limit_exceeded"


def test_200_slow_streams_at_once_complete_and_the_201st_is_refused(
    real_redis, asgi_servers, tier_user
):
    user, key = tier_user(max_concurrent_requests=200, requests_per_minute=10_000, burst=10_000)
    (base,) = asgi_servers(real_redis, count=1)
    auth = {"Authorization": f"Bearer {key}"}
    # Each stream takes about 6 s on the server: 1 s before each of its 6 parts.
    slow = _body("Take your time [mock-latency:1]", max_tokens=2, stream=True)

    async def run() -> tuple[list[tuple[int, list[str]]], int, dict[str, Any]]:
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
        timeout = httpx.Timeout(60)
        async with httpx.AsyncClient(base_url=base, limits=limits, timeout=timeout) as client:
            started = 0
            all_started = asyncio.Event()

            async def stream() -> tuple[int, list[str]]:
                nonlocal started
                request = client.stream("POST", "/v1/chat/completions", json=slow, headers=auth)
                async with request as response:
                    started += 1
                    if started == 200:
                        all_started.set()
                    return response.status_code, [line async for line in response.aiter_lines()]

            streams = [asyncio.create_task(stream()) for _ in range(200)]
            await asyncio.wait_for(all_started.wait(), 30)
            extra = await client.post("/v1/chat/completions", json=slow, headers=auth)
            results = await asyncio.gather(*streams)
            return results, extra.status_code, extra.json()

    results, extra_status, extra_body = run_in_fresh_loop(run())

    assert extra_status == 429
    assert extra_body["error"]["code"] == "rate_limit_exceeded"
    assert "max_concurrent_requests" in extra_body["error"]["message"]
    assert [status for status, _ in results] == [200] * 200
    assert all(_events(lines)[-1] == "[DONE]" for _, lines in results)
    assert ledger(user)["requests"] == 200
    _, _, raw = call(f"{base}/v1/quota", headers=auth)
    assert json.loads(raw)["limits"]["max_concurrent_requests"]["used"] == 0


def test_a_client_that_hangs_up_frees_its_slot_at_once_and_pays_what_it_got(
    real_redis, asgi_servers, tier_user
):
    user, key = tier_user(max_concurrent_requests=1, requests_per_minute=1000, burst=1000)
    (base,) = asgi_servers(real_redis, count=1)
    auth = {"Authorization": f"Bearer {key}"}
    # 0.5 s between parts: the stream would take over 10 s to the end.
    body = _body("Say a lot [mock-latency:0.5]", max_tokens=20, stream=True)

    async def hang_up() -> list[str]:
        async with (
            httpx.AsyncClient(base_url=base, timeout=30) as client,
            client.stream("POST", "/v1/chat/completions", json=body, headers=auth) as response,
        ):
            lines = []
            async for line in response.aiter_lines():
                lines.append(line)
                if len(_text(_events(lines)).split()) >= 2:  # two words read: hang up
                    break
        return lines

    lines = run_in_fresh_loop(hang_up())
    hung_up = time.monotonic()

    used = None
    while time.monotonic() - hung_up < 1.0:
        _, _, raw = call(f"{base}/v1/quota", headers=auth)
        used = json.loads(raw)["limits"]["max_concurrent_requests"]["used"]
        if used == 0:
            break
        time.sleep(0.05)
    assert used == 0, "the lease is still held a second after the client hung up"
    delivered = _text(_events(lines))
    assert ledger(user) == {
        "requests": 1,
        "prompt": count_prompt_tokens(body["messages"], MODEL),
        "completion": count_text_tokens(delivered, MODEL),
        "denied": 0,
    }


def test_token_budget_holds_across_two_asgi_servers(real_redis, asgi_servers, tier_user):
    user, key = tier_user(tokens_per_day=2000, requests_per_minute=10_000, burst=10_000)
    servers = asgi_servers(real_redis, count=2)
    auth = {"Authorization": f"Bearer {key}"}
    body = _body("Count the budget down.", max_tokens=60)

    async def run() -> list[int]:
        async with httpx.AsyncClient(timeout=30) as client:
            answers = await asyncio.gather(
                *(
                    client.post(f"{servers[i % 2]}/v1/chat/completions", json=body, headers=auth)
                    for i in range(80)
                )
            )
        return [a.status_code for a in answers]

    statuses = run_in_fresh_loop(run())

    spent = settled_ledger(user, statuses.count(200))  # each is settled once answered
    print(f"\n80 requests over 2 uvicorn servers: {statuses.count(200)} served, {spent}")
    assert 500 not in statuses
    assert statuses.count(429) > 0
    assert spent["prompt"] + spent["completion"] <= 2000
    assert spent["requests"] == statuses.count(200)


def test_redis_down_never_500_and_budgets_come_from_the_ledger(asgi_servers, tier_user):
    user, key = tier_user(tokens_per_day=600, requests_per_minute=1000, burst=1000)
    nobody_listens = f"redis://127.0.0.1:{_free_port()}/0"
    (base,) = asgi_servers(nobody_listens, count=1)
    auth = {"Authorization": f"Bearer {key}"}
    body = _body("Redis is gone", max_tokens=50)

    async def run() -> list[int]:
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            answers = await asyncio.gather(
                *(client.post("/v1/chat/completions", json=body, headers=auth) for _ in range(20))
            )
            answers.append(await client.get("/v1/models", headers=auth))
        return [a.status_code for a in answers]

    statuses = run_in_fresh_loop(run())

    spent = settled_ledger(user, statuses[:-1].count(200))  # each is settled once answered
    assert 500 not in statuses
    assert statuses[-1] == 200  # FAIL_OPEN (the default) lets request limits pass
    assert statuses[:-1].count(200) == spent["requests"] > 0
    assert statuses[:-1].count(429) > 0
    assert spent["prompt"] + spent["completion"] <= 600
