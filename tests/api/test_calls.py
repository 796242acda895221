"""`quotas.reserve` / `quotas.areserve` from a view, an async view and a background task:
settle, refund, charge on a forgotten settle, denials, fallback, the tier's cap, and the
same decisions as the HTTP endpoint."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from asgiref.sync import async_to_sync
from django.db import connection
from django.http import JsonResponse
from django.test import RequestFactory

import quotas
from quotas.conf import conf
from quotas.tokens import count_prompt_tokens
from tests.event_loop import run_in_fresh_loop

from .conftest import ledger

HELLO = [{"role": "user", "content": "Hello there"}]


def summarise(request):
    """A project's own view metering its own AI call."""
    try:
        with quotas.reserve(request.user, messages=HELLO, max_tokens=50) as call:
            call.settle({"prompt_tokens": 9, "completion_tokens": 21})
    except quotas.QuotaExceeded as exc:
        return JsonResponse({"error": exc.message}, status=429, headers=exc.headers())
    return JsonResponse({"model": call.model}, headers=call.headers())


async def asummarise(request):
    try:
        async with quotas.areserve(request.user, messages=HELLO, max_tokens=50) as call:
            await call.settle(prompt_tokens=7, completion_tokens=3)
    except quotas.QuotaExceeded as exc:
        return JsonResponse({"error": exc.message}, status=429)
    return JsonResponse({"model": call.model})


def as_request(user):
    request = RequestFactory().get("/summary")
    request.user = user
    return request


def test_a_view_settles_the_real_usage(make_caller) -> None:
    caller = make_caller(tokens_per_day=1_000, requests_per_day=5)

    response = summarise(as_request(caller.user))

    assert response.status_code == 200
    assert json.loads(response.content) == {"model": "gpt-4o-mini"}  # the tier's default
    assert response["x-ratelimit-limit-requests"] == "5"
    assert ledger(caller.user) == {"requests": 1, "prompt": 9, "completion": 21, "denied": 0}


def test_an_async_view_settles_the_real_usage(make_caller) -> None:
    caller = make_caller(tokens_per_day=1_000, requests_per_day=1)

    first = async_to_sync(asummarise)(as_request(caller.user))
    second = async_to_sync(asummarise)(as_request(caller.user))

    assert first.status_code == 200
    assert second.status_code == 429
    assert "requests_per_day" in json.loads(second.content)["error"]
    assert ledger(caller.user) == {"requests": 1, "prompt": 7, "completion": 3, "denied": 1}


def test_an_exception_in_the_block_refunds_and_propagates(make_caller) -> None:
    caller = make_caller(requests_per_day=1, tokens_per_day=10_000)

    with pytest.raises(ZeroDivisionError), quotas.reserve(caller.user, messages=HELLO):
        1 / 0  # noqa: B018

    with quotas.reserve(caller.user, messages=HELLO) as call:  # the request came back
        call.settle(prompt_tokens=4, completion_tokens=1)
    assert ledger(caller.user)["requests"] == 1


def test_a_forgotten_settle_charges_the_whole_reservation(make_caller, caplog) -> None:
    caller = make_caller(tokens_per_day=10_000)

    with quotas.reserve(caller.user, messages=HELLO, max_tokens=100) as call:
        pass

    prompt = count_prompt_tokens(HELLO, "gpt-4o-mini")
    assert call.reserved_tokens == prompt + 100
    assert ledger(caller.user) == {"requests": 1, "prompt": prompt, "completion": 100, "denied": 0}
    assert "without settle" in caplog.text


def task_draft_email(user_id: int) -> str:
    """A background task: no request, only the user's id."""
    with quotas.reserve(user_id, model="gpt-4o", tokens=500) as call:
        call.settle(prompt_tokens=300, completion_tokens=150)
    return call.model


def test_a_task_outside_any_request_and_its_denial(make_caller) -> None:
    caller = make_caller(tokens_per_day=1_000)

    assert task_draft_email(caller.user.pk) == "gpt-4o"
    assert task_draft_email(caller.user.pk) == "gpt-4o"  # 450 settled + 500 reserved
    with pytest.raises(quotas.QuotaExceeded) as denied:
        task_draft_email(caller.user.pk)  # 900 settled + 500 is over 1,000

    exc = denied.value
    assert exc.limit == "tokens_per_day"
    assert exc.code == "insufficient_quota"
    assert exc.retry_after >= 1
    assert exc.resets_at is not None
    assert exc.headers()["Retry-After"] == str(exc.retry_after)
    assert ledger(caller.user)["requests"] == 2


def test_running_low_serves_the_fallback(make_caller) -> None:
    caller = make_caller(
        tokens_per_day=1_000,
        allowed=("gpt-4o", "gpt-4o-mini"),
        default="gpt-4o",
        fallback="gpt-4o-mini",
        degrade_at_percent=50,
    )
    with quotas.reserve(caller.user, tokens=600) as call:
        call.settle(prompt_tokens=600, completion_tokens=0)
    assert call.model == "gpt-4o" and not call.downgraded

    with quotas.reserve(caller.user, tokens=100) as call:
        call.settle(prompt_tokens=100, completion_tokens=0)

    assert call.downgraded
    assert call.requested_model == "gpt-4o"
    assert call.model == "gpt-4o-mini"


def test_a_denial_counts_against_the_model_asked_for(make_caller) -> None:
    from quotas.models import UsageRecord

    caller = make_caller(
        tokens_per_day=1_000,
        allowed=("gpt-4o", "gpt-4o-mini"),
        default="gpt-4o",
        fallback="gpt-4o-mini",
        degrade_at_percent=50,
    )
    with quotas.reserve(caller.user, tokens=900) as call:
        call.settle(prompt_tokens=900, completion_tokens=0)

    with pytest.raises(quotas.QuotaExceeded):  # too big for the fallback too
        quotas.reserve(caller.user, tokens=500)

    denied = UsageRecord.objects.filter(user=caller.user, denied__gt=0)
    assert list(denied.values_list("model", "denied")) == [("gpt-4o", 1)]


def test_the_tier_caps_max_tokens(make_caller) -> None:
    caller = make_caller(max_tokens_per_request=64)

    with quotas.reserve(caller.user, messages=HELLO) as call:
        call.refund()
    assert call.max_tokens == min(conf.DEFAULT_MAX_TOKENS, 64)

    with pytest.raises(quotas.InvalidRequest) as over:
        quotas.reserve(caller.user, messages=HELLO, max_tokens=65)
    assert over.value.param == "max_tokens"
    assert over.value.code == "max_tokens_exceeded"


def test_a_model_outside_the_tier_is_refused(make_caller) -> None:
    caller = make_caller(allowed=("gpt-4o-mini",))

    with pytest.raises(quotas.InvalidRequest) as refused:
        quotas.reserve(caller.user, model="gpt-4o", messages=HELLO)

    assert refused.value.code == "model_not_allowed"


def test_a_blocked_user_is_refused(make_caller) -> None:
    caller = make_caller(blocked=True)

    with pytest.raises(quotas.QuotaBlocked):
        quotas.reserve(caller.user, messages=HELLO)


def test_settle_reads_every_usage_shape(make_caller) -> None:
    caller = make_caller()
    shapes = [
        {"prompt_tokens": 5, "completion_tokens": 2},  # chat
        {"input_tokens": 5, "output_tokens": 2, "input_tokens_details": {"cached_tokens": 3}},
        {"prompt_tokens": 5, "total_tokens": 5},  # embeddings: no completion
    ]
    used = []
    for usage in shapes:
        with quotas.reserve(caller.user, tokens=10) as call:
            used.append(call.settle(usage)[:3])

    assert used == [(5, 2, None), (5, 2, 3), (5, 0, None)]
    assert ledger(caller.user)["completion"] == 4


def test_python_and_http_callers_share_one_decision(make_caller, mock) -> None:
    caller = make_caller(requests_per_day=2)

    with quotas.reserve(caller.user, messages=HELLO) as call:
        call.settle(prompt_tokens=5, completion_tokens=5)
    http = caller.client().post("/v1/chat/completions", {"messages": HELLO}, format="json")
    assert http.status_code == 200
    with pytest.raises(quotas.QuotaExceeded) as denied:
        quotas.reserve(caller.user, messages=HELLO)
    assert denied.value.limit == "requests_per_day"
    again = caller.client().post("/v1/chat/completions", {"messages": HELLO}, format="json")
    assert again.status_code == 429


@pytest.mark.django_db(transaction=True)
def test_tool_definitions_never_overspend_a_budget(real_redis, make_caller) -> None:
    """40 concurrent calls whose prompt is mostly tools, on real Redis."""
    if connection.vendor == "sqlite":
        pytest.skip("threads share SQLite's one in-memory test connection (no concurrent writes)")
    budget = 20_000
    caller = make_caller(tokens_per_day=budget)
    tools = [
        {
            "type": "function",
            "function": {"name": f"tool_{i}", "description": "look up an order " * 90},
        }
        for i in range(6)
    ]
    billed = count_prompt_tokens(HELLO, "gpt-4o-mini", [tools])
    served = []
    lock = threading.Lock()

    def one(_: int) -> None:
        try:
            with quotas.reserve(caller.user, messages=HELLO, tools=tools, max_tokens=20) as call:
                call.settle(prompt_tokens=billed, completion_tokens=20)
            with lock:
                served.append(call)
        except quotas.QuotaExceeded:
            pass

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(40)))

    settled = ledger(caller.user)
    assert billed > 2_000  # the tools are most of the prompt
    assert 0 < len(served) < 40
    assert settled["prompt"] + settled["completion"] <= budget
    assert settled["requests"] == len(served) == budget // (billed + 20)


@pytest.mark.django_db(transaction=True)
def test_areserve_makes_its_redis_calls_on_redis_asyncio(make_caller, monkeypatch) -> None:
    """The sync engine is never asked; the decision still counts with the sync path."""
    from quotas.engine import QuotaEngine

    caller = make_caller(requests_per_day=2, tokens_per_day=10_000)

    def refuse(*args, **kwargs):
        raise AssertionError("the sync engine was used by areserve")

    async def twice():
        for _ in range(2):
            async with quotas.areserve(caller.user, tokens=100) as call:
                await call.settle(prompt_tokens=60, completion_tokens=10)
        async with quotas.areserve(caller.user, tokens=100) as call:
            pass

    with monkeypatch.context() as patched:
        for name in ("reserve", "settle", "refund"):
            patched.setattr(QuotaEngine, name, refuse)
        with pytest.raises(quotas.QuotaExceeded) as denied:
            run_in_fresh_loop(twice())

    assert denied.value.limit == "requests_per_day"
    assert ledger(caller.user) == {"requests": 2, "prompt": 120, "completion": 20, "denied": 1}
    with pytest.raises(quotas.QuotaExceeded):  # the sync path sees the same counters
        quotas.reserve(caller.user, tokens=100)


@pytest.mark.django_db(transaction=True)
def test_areserve_refunds_on_exception_and_charges_a_forgotten_settle(make_caller) -> None:
    caller = make_caller(requests_per_day=1, tokens_per_day=10_000)

    async def run():
        with pytest.raises(KeyError):
            async with quotas.areserve(caller.user, tokens=100):
                raise KeyError("boom")
        async with quotas.areserve(caller.user, tokens=100) as call:
            assert call.model == "gpt-4o-mini"

    run_in_fresh_loop(run())

    assert ledger(caller.user) == {"requests": 1, "prompt": 100, "completion": 0, "denied": 0}


@pytest.mark.django_db(transaction=True)
def test_areserve_with_redis_down_uses_the_ledger_or_refuses(make_caller, settings) -> None:
    caller = make_caller(requests_per_day=5, tokens_per_day=10_000)
    settings.QUOTAS = {**settings.QUOTAS, "REDIS_URL": "redis://127.0.0.1:1/0"}

    async def once():
        async with quotas.areserve(caller.user, tokens=100) as call:
            await call.settle(prompt_tokens=30, completion_tokens=5)

    run_in_fresh_loop(once())
    assert ledger(caller.user)["requests"] == 1  # FAIL_OPEN: budgets from the ledger

    settings.QUOTAS = {**settings.QUOTAS, "FAIL_OPEN": False}
    with pytest.raises(quotas.QuotaUnavailable):
        run_in_fresh_loop(once())
    assert ledger(caller.user)["requests"] == 1


def test_cached_and_reasoning_tokens_are_kept_and_cached_tokens_priced_at_their_rate(
    make_caller, catalogue
) -> None:
    from decimal import Decimal

    from quotas.models import UsageRecord

    catalogue["gpt-4o"].cached_input_price_per_million = Decimal("1.25")
    catalogue["gpt-4o"].save()
    catalogue["gpt-4o-mini"].cached_input_price_per_million = None  # the input price
    catalogue["gpt-4o-mini"].save()
    caller = make_caller()
    usage = {
        "prompt_tokens": 2000,
        "completion_tokens": 300,
        "prompt_tokens_details": {"cached_tokens": 1536},
        "completion_tokens_details": {"reasoning_tokens": 200},
    }
    for model in ("gpt-4o", "gpt-4o-mini"):
        with quotas.reserve(caller.user, model=model, messages=HELLO) as call:
            call.settle(usage)

    rows = {r.model: r for r in UsageRecord.objects.filter(user=caller.user)}
    assert (rows["gpt-4o"].cached_tokens, rows["gpt-4o"].reasoning_tokens) == (1536, 200)
    # gpt-4o: 464 x $2.50 + 1536 x $1.25 + 300 x $10.00 per million
    assert rows["gpt-4o"].cost == Decimal("0.006080")
    # gpt-4o-mini, no cached price: 2000 x $0.15 + 300 x $0.60 per million
    assert rows["gpt-4o-mini"].cost == Decimal("0.000480")


def test_reported_parts_never_exceed_their_whole(make_caller) -> None:
    from quotas.models import UsageRecord

    caller = make_caller()
    with quotas.reserve(caller.user, messages=HELLO) as call:
        call.settle(
            {
                "input_tokens": 10,
                "output_tokens": 4,
                "input_tokens_details": {"cached_tokens": 99},
                "output_tokens_details": {"reasoning_tokens": 99},
            }
        )

    row = UsageRecord.objects.get(user=caller.user)
    assert (row.cached_tokens, row.reasoning_tokens) == (10, 4)
