"""The async /v1/ views in process (Django's AsyncClient runs the ASGI handler): the HTTP
contract of the DRF views, streams, cancellation and provider faults."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import AsyncClient

from quotas import policy
from quotas.models import APIKey, LevelUsage, Team, Tier, UserQuota
from quotas.tokens import count_prompt_tokens, count_text_tokens
from tests.event_loop import run_in_fresh_loop

from .conftest import Caller, ledger

pytestmark = pytest.mark.django_db(transaction=True)

URL = "/v1/chat/completions"
HELLO = [{"role": "user", "content": "Tell me about quotas"}]


class KeyClient(AsyncClient):
    """Django's AsyncClient sending an API key with every request."""

    def __init__(self, key: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.key = key

    def generic(self, *args: Any, headers: dict[str, str] | None = None, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.key}", **(headers or {})}
        return super().generic(*args, headers=headers, **kwargs)


def client_of(caller: Caller) -> AsyncClient:
    return KeyClient(caller.key)


async def post(client: AsyncClient, **body: Any) -> Any:
    payload = {"model": "gpt-4o", "messages": HELLO, **body}
    return await client.post(URL, json.dumps(payload), content_type="application/json")


async def lease_used(client: AsyncClient) -> int:
    report = (await client.get("/v1/quota")).json()
    return int(report["limits"]["max_concurrent_requests"]["used"])


def sse(parts: list[bytes]) -> list[Any]:
    lines = b"".join(parts).decode().split("\n\n")
    payloads = [line[len("data: ") :] for line in lines if line.startswith("data: ")]
    return [p if p == "[DONE]" else json.loads(p) for p in payloads]


def text_of(events: list[Any]) -> str:
    return "".join(
        choice["delta"].get("content") or ""
        for event in events
        if isinstance(event, dict)
        for choice in event.get("choices", [])
    )


def test_a_completion_is_settled_to_its_usage_with_the_rate_limit_headers(make_caller) -> None:
    caller = make_caller(tokens_per_day=10_000, requests_per_minute=60, burst=10)

    response = run_in_fresh_loop(post(client_of(caller), max_tokens=10))

    assert response.status_code == 200
    reply = response.json()
    assert reply["model"] == "gpt-4o"
    assert reply["choices"][0]["message"]["content"].startswith("[mock]")
    assert response["x-ratelimit-limit-requests"] == "60"  # per minute, as set
    assert ledger(caller.user) == {
        "requests": 1,
        "prompt": reply["usage"]["prompt_tokens"],
        "completion": reply["usage"]["completion_tokens"],
        "denied": 0,
    }


def test_errors_are_shaped_like_openais(make_caller) -> None:
    caller = make_caller(requests_per_day=1)

    async def run() -> dict[str, Any]:
        anonymous = AsyncClient()
        client = client_of(caller)
        return {
            "no key": await anonymous.get("/v1/models"),
            "wrong key": await KeyClient("x.y").get("/v1/quota"),
            "get on chat": await client.get(URL),
            "bad json": await client.post(URL, "{", content_type="application/json"),
            "first": await post(client, max_tokens=5),
            "over the day": await post(client, max_tokens=5),
        }

    answers = run_in_fresh_loop(run())

    for name in ("no key", "wrong key"):
        assert answers[name].status_code == 401, name
        assert answers[name]["WWW-Authenticate"] == 'Bearer realm="api"'
        assert answers[name].json()["error"]["code"] == "invalid_api_key"
    assert answers["get on chat"].status_code == 405
    assert answers["bad json"].status_code == 400
    assert answers["bad json"].json()["error"]["type"] == "invalid_request_error"
    assert answers["first"].status_code == 200
    over = answers["over the day"]
    assert over.status_code == 429
    assert over.json()["error"]["code"] == "insufficient_quota"
    assert int(over["Retry-After"]) >= 1
    assert over["x-ratelimit-remaining-requests"] == "0"


def test_a_keys_own_limits_and_the_teams_apply(make_caller, mock) -> None:
    caller = make_caller(tokens_per_day=10_000)
    capped, secret = APIKey.objects.create_key(user=caller.user, name="ci", tokens_per_day=80)
    team_tier = Tier.objects.create(slug="team-tier", name="Team", tokens_per_day=120)
    team = Team.objects.create(name="Acme", slug="acme", tier=team_tier)
    UserQuota.objects.filter(user=caller.user).update(team=team)
    policy.invalidate()

    async def run() -> dict[str, Any]:
        ci, own = KeyClient(secret), client_of(caller)
        return {
            "ci": await post(ci, max_tokens=30),
            "ci over its key": await post(ci, max_tokens=60),
            "own over the team": await post(own, max_tokens=200),
            "ci quota": (await ci.get("/v1/quota")).json(),
        }

    answers = run_in_fresh_loop(run())

    assert answers["ci"].status_code == 200
    refused = answers["ci over its key"]
    assert refused.status_code == 429
    assert "key.tokens_per_day" in refused.json()["error"]["message"]
    assert refused.json()["error"]["code"] == "insufficient_quota"
    assert refused["x-should-retry"] == "false"
    assert int(refused["retry-after-ms"]) > 0
    over_team = answers["own over the team"]
    assert over_team.status_code == 429
    assert "team.tokens_per_day" in over_team.json()["error"]["message"]
    report = answers["ci quota"]
    assert report["key"]["limits"]["tokens_per_day"]["limit"] == 80
    assert report["team"]["limits"]["tokens_per_day"]["limit"] == 120
    assert LevelUsage.objects.filter(level=f"k:{capped.pk}").exists()
    assert LevelUsage.objects.filter(level=f"t:{team.pk}").exists()


def test_a_rate_refusal_is_retryable_and_shown_per_minute(make_caller, mock) -> None:
    caller = make_caller(requests_per_minute=6, burst=1)

    async def run() -> Any:
        client = client_of(caller)
        await post(client, max_tokens=5)
        return await post(client, max_tokens=5)

    refused = run_in_fresh_loop(run())

    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert "x-should-retry" not in refused
    assert int(refused["retry-after-ms"]) > 0
    assert refused["x-ratelimit-limit-requests"] == "6"


def test_reading_the_models_and_the_quota_charges_nothing(make_caller, mock) -> None:
    caller = make_caller(requests_per_day=1, requests_per_minute=60, burst=1)

    async def run() -> tuple[list[Any], Any]:
        client = client_of(caller)
        reads = [await client.get(path) for path in ("/v1/models", "/v1/quota") * 3]
        return reads, await post(client, max_tokens=5)

    reads, call = run_in_fresh_loop(run())

    assert [r.status_code for r in reads] == [200] * 6
    assert reads[0].json()["data"][0]["id"] == "gpt-4o"
    assert reads[0]["x-ratelimit-remaining-requests"] == "1"
    assert "Retry-After" not in reads[0]
    assert reads[1].json()["limits"]["requests_per_day"]["used"] == 0
    assert call.status_code == 200
    assert ledger(caller.user)["requests"] == 1


@pytest.mark.parametrize("path", [URL, "/v1/models", "/v1/quota"])
def test_blocked_and_tierless_callers_are_refused(make_caller, catalogue, mock, path) -> None:
    blocked = make_caller("bo", blocked=True)
    nobody = get_user_model().objects.create_user("nobody")
    _, nobodys_key = APIKey.objects.create_key(user=nobody, name="test")
    Tier.objects.update(is_default=False)

    async def ask(client: AsyncClient) -> Any:
        return await post(client, max_tokens=5) if path == URL else await client.get(path)

    async def run() -> tuple[Any, Any]:
        return await ask(client_of(blocked)), await ask(KeyClient(nobodys_key))

    was_blocked, tierless = run_in_fresh_loop(run())

    assert was_blocked.status_code == 403
    assert was_blocked.json()["error"]["code"] == "blocked"
    assert tierless.status_code == 403
    assert tierless.json()["error"]["code"] == "no_tier"
    assert "no default tier" in tierless.json()["error"]["message"]
    assert mock.calls == 0


def test_a_session_needs_the_csrf_token_to_post(make_caller) -> None:
    caller = make_caller()

    async def run() -> tuple[int, int]:
        client = AsyncClient(enforce_csrf_checks=True)
        await client.aforce_login(caller.user)
        read = await client.get("/v1/quota")
        written = await post(client, max_tokens=5)
        return read.status_code, written.status_code

    assert run_in_fresh_loop(run()) == (200, 403)


def test_a_stream_ends_in_done_and_is_charged_the_providers_usage(make_caller) -> None:
    caller = make_caller(max_concurrent_requests=1, tokens_per_day=10_000)

    async def run() -> tuple[Any, list[bytes], int]:
        client = client_of(caller)
        response = await post(
            client, max_tokens=12, stream=True, stream_options={"include_usage": True}
        )
        parts = [part async for part in response.streaming_content]
        return response, parts, await lease_used(client)

    response, parts, used = run_in_fresh_loop(run())

    assert response["Content-Type"] == "text/event-stream"
    events = sse(parts)
    assert events[-1] == "[DONE]"
    usage = events[-2]["usage"]
    assert usage["completion_tokens"] == count_text_tokens(text_of(events), "gpt-4o")
    assert used == 0
    book = ledger(caller.user)
    assert (book["prompt"], book["completion"]) == (
        usage["prompt_tokens"],
        usage["completion_tokens"],
    )


def test_a_cancelled_stream_is_charged_what_it_delivered_and_frees_its_lease(
    make_caller, mock
) -> None:
    caller = make_caller(max_concurrent_requests=1, tokens_per_day=10_000)
    mock.latency = 0.05  # 20 tokens: the whole stream would take over a second

    async def run() -> tuple[list[bytes], int, int]:
        client = client_of(caller)
        response = await post(client, max_tokens=20, stream=True)
        parts: list[bytes] = []

        async def read() -> None:
            async for part in response.streaming_content:
                parts.append(part)

        reading = asyncio.ensure_future(read())
        while len(text_of(sse(parts)).split()) < 3:
            await asyncio.sleep(0.01)
        busy = await lease_used(client)
        reading.cancel()  # what Django does when the client goes away
        with pytest.raises(asyncio.CancelledError):
            await reading
        return parts, busy, await lease_used(client)

    parts, busy, used = run_in_fresh_loop(run())

    assert (busy, used) == (1, 0)
    delivered = text_of(sse(parts))
    assert ledger(caller.user) == {
        "requests": 1,
        "prompt": count_prompt_tokens(HELLO, "gpt-4o"),
        "completion": count_text_tokens(delivered, "gpt-4o"),
        "denied": 0,
    }


def test_a_stream_never_read_is_settled_when_django_closes_the_response(make_caller) -> None:
    caller = make_caller(max_concurrent_requests=1, tokens_per_day=10_000)

    async def run() -> tuple[int, int]:
        client = client_of(caller)
        response = await post(client, max_tokens=20, stream=True)
        busy = await lease_used(client)
        await asyncio.to_thread(response.close)  # as Django does, in a worker thread
        return busy, await lease_used(client)

    assert run_in_fresh_loop(run()) == (1, 0)
    book = ledger(caller.user)
    # The first chunk (the role, no text) was read from the provider, nothing delivered.
    assert (book["requests"], book["completion"]) == (1, 0)


@pytest.mark.parametrize(
    ("fault", "stream", "status", "code"),
    [
        ("500", False, 502, "upstream_error"),
        ("timeout", True, 504, "timeout"),
        ("429", True, 503, "upstream_rate_limited"),
    ],
)
def test_a_provider_fault_refunds(make_caller, mock, fault, stream, status, code) -> None:
    caller = make_caller(max_concurrent_requests=1, tokens_per_day=1000)
    mock.fail = fault

    async def run() -> tuple[Any, int]:
        client = client_of(caller)
        response = await post(client, max_tokens=20, stream=stream)
        return response, await lease_used(client)

    response, used = run_in_fresh_loop(run())

    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    assert used == 0
    assert ledger(caller.user) == {"requests": 0, "prompt": 0, "completion": 0, "denied": 0}


def test_a_stream_cut_by_the_provider_ends_with_an_error_event(make_caller, mock) -> None:
    caller = make_caller(max_concurrent_requests=1, tokens_per_day=10_000)
    mock.fail = "cut"

    async def run() -> list[bytes]:
        response = await post(client_of(caller), max_tokens=20, stream=True)
        return [part async for part in response.streaming_content]

    events = sse(run_in_fresh_loop(run()))

    assert "[DONE]" not in events
    assert "mid-stream" in events[-1]["error"]["message"]
    sent = count_text_tokens(text_of(events), "gpt-4o")
    assert 0 < sent < 20
    assert ledger(caller.user)["completion"] == sent
