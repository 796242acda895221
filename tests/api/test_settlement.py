"""A non-streamed completion is answered first and settled when the server closes the
response: the ledger row and the counters are right once it is closed, and a settlement
that fails never changes the answer (the reservation stays charged)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from quotas.api.settlement import SettlesOnClose
from quotas.models import UsageRecord
from quotas.services import QuotaService
from tests.event_loop import run_in_fresh_loop

from .conftest import Caller, ledger
from .test_aio import client_of

pytestmark = pytest.mark.django_db(transaction=True)

URL = "/v1/chat/completions"
HELLO = [{"role": "user", "content": "Hello there"}]


def used_tokens(caller: Caller) -> int:
    report = caller.client().get("/v1/quota").json()
    return int(report["limits"]["tokens_per_day"]["used"])


@pytest.fixture
def at_close(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """What had happened when the server closed each settled answer."""
    seen: list[dict[str, Any]] = []
    close = SettlesOnClose.close

    def watching(self: Any) -> None:
        seen.append({"body": bytes(self.content), "rows": UsageRecord.objects.count()})
        close(self)
        seen[-1]["rows_after"] = UsageRecord.objects.count()

    monkeypatch.setattr(SettlesOnClose, "close", watching)
    return seen


def failing_settle(monkeypatch: pytest.MonkeyPatch) -> None:
    def settle(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("the ledger is gone")

    monkeypatch.setattr(QuotaService, "settle", settle)
    monkeypatch.setattr(QuotaService, "asettle", settle)


def test_the_answer_is_made_before_the_settlement(make_caller, at_close) -> None:
    caller = make_caller(tokens_per_day=10_000)

    response = caller.client().post(URL, {"messages": HELLO, "max_tokens": 12}, format="json")

    assert response.status_code == 200
    reply = response.json()
    assert len(at_close) == 1
    assert json.loads(at_close[0]["body"]) == reply  # the body was made, then settled
    assert (at_close[0]["rows"], at_close[0]["rows_after"]) == (0, 1)
    usage = reply["usage"]
    assert ledger(caller.user) == {
        "requests": 1,
        "prompt": usage["prompt_tokens"],
        "completion": 12,
        "denied": 0,
    }
    assert used_tokens(caller) == usage["prompt_tokens"] + 12  # counters moved to the usage


def test_a_failed_settlement_keeps_the_answer_and_the_charge(make_caller, monkeypatch) -> None:
    caller = make_caller(tokens_per_day=10_000)
    failing_settle(monkeypatch)

    response = caller.client().post(URL, {"messages": HELLO, "max_tokens": 500}, format="json")

    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"].startswith("[mock]")
    reserved = used_tokens(caller)
    assert reserved > response.json()["usage"]["total_tokens"]  # the worst case, not free
    assert ledger(caller.user)["requests"] == 0


async def apost(caller: Caller, max_tokens: int = 10) -> Any:
    body = json.dumps({"model": "gpt-4o", "messages": HELLO, "max_tokens": max_tokens})
    return await client_of(caller).post(URL, body, content_type="application/json")


def test_the_async_answer_is_sent_before_the_settlement(make_caller, at_close) -> None:
    caller = make_caller(tokens_per_day=10_000)

    response = run_in_fresh_loop(apost(caller))

    assert response.status_code == 200
    reply = response.json()
    assert json.loads(at_close[0]["body"]) == reply
    assert (at_close[0]["rows"], at_close[0]["rows_after"]) == (0, 1)
    assert ledger(caller.user)["completion"] == reply["usage"]["completion_tokens"]
    assert used_tokens(caller) == reply["usage"]["total_tokens"]


def test_a_failed_async_settlement_keeps_the_answer(make_caller, monkeypatch) -> None:
    caller = make_caller(tokens_per_day=10_000)
    failing_settle(monkeypatch)

    response = run_in_fresh_loop(apost(caller, max_tokens=500))

    assert response.status_code == 200
    assert response.json()["model"] == "gpt-4o"
    assert used_tokens(caller) > response.json()["usage"]["total_tokens"]
    assert ledger(caller.user)["requests"] == 0
