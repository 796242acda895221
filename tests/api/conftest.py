"""Callers with API keys on their own tier, the model catalogue and the mock provider."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import openai
import pytest
from django.contrib.auth import get_user_model
from django.core.signals import request_finished, request_started
from django.db.models import Sum
from rest_framework.test import APIClient

from quotas.mock_provider import MockTransport
from quotas.models import AIModel, APIKey, Tier, UsageRecord, UserQuota

PRICES = {
    "gpt-4o": (Decimal("2.50"), Decimal("10.00")),
    "gpt-4o-mini": (Decimal("0.15"), Decimal("0.60")),
    "gpt-4.1-mini": (Decimal("0.40"), Decimal("1.60")),
}


@dataclass
class Caller:
    user: Any
    key: str

    def client(self) -> APIClient:
        """Django's test client, authenticated with the caller's key."""
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {self.key}")
        return client


@pytest.fixture(autouse=True)
def mock(mock_provider: MockTransport) -> MockTransport:
    """The in-process mock provider, fresh for each test."""
    return mock_provider


@pytest.fixture
def catalogue(db: None) -> dict[str, AIModel]:
    return {
        name: AIModel.objects.create(
            name=name, input_price_per_million=prices[0], output_price_per_million=prices[1]
        )
        for name, prices in PRICES.items()
    }


@pytest.fixture
def make_caller(catalogue: dict[str, AIModel]) -> Callable[..., Caller]:
    """make_caller(name, allowed=..., default=..., fallback=..., blocked=..., **tier limits)."""

    def make(
        name: str = "ada",
        *,
        allowed: tuple[str, ...] = ("gpt-4o", "gpt-4o-mini"),
        default: str | None = "gpt-4o-mini",
        fallback: str | None = None,
        blocked: bool = False,
        **limits: Any,
    ) -> Caller:
        tier = Tier.objects.create(
            slug=f"tier-{name}",
            name=f"Tier of {name}",
            default_model=catalogue[default] if default else None,
            fallback_model=catalogue[fallback] if fallback else None,
            **limits,
        )
        tier.allowed_models.set([catalogue[m] for m in allowed])
        user = get_user_model().objects.create_user(name)
        UserQuota.objects.create(user=user, tier=tier, blocked=blocked)
        _, key = APIKey.objects.create_key(user=user, name="test")
        return Caller(user, key)

    return make


@pytest.fixture
def settled_server(live_server: Any) -> Iterator[Any]:
    """The live server, whose requests have all finished when the test ends.

    A completion is settled when the server closes its response, after the client has the
    answer; a settlement still writing the ledger while the test's database is flushed can
    deadlock with the flush (the ledger's triggers lock its totals too). Django sends
    `request_finished` once the response is closed, settlement included."""
    lock, running = threading.Lock(), [0]

    def started(**_: Any) -> None:
        with lock:
            running[0] += 1

    def finished(**_: Any) -> None:
        with lock:
            running[0] -= 1

    request_started.connect(started, weak=False)
    request_finished.connect(finished, weak=False)
    yield live_server
    deadline = time.monotonic() + 10
    while running[0] > 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    request_started.disconnect(started)
    request_finished.disconnect(finished)


@pytest.fixture
def sdk(settled_server: Any) -> Iterator[Callable[[Caller], openai.OpenAI]]:
    """sdk(caller): the official openai SDK against the live server, with the caller's key.

    Retries are off so that a 429 reaches the test; the clients are closed at the end, so
    that the server's keep-alive threads let go of their database connections.
    """
    clients: list[openai.OpenAI] = []

    def make(caller: Caller) -> openai.OpenAI:
        client = openai.OpenAI(
            api_key=caller.key, base_url=f"{settled_server.url}/v1", max_retries=0, timeout=20
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def ledger(user: Any, **filters: Any) -> dict[str, int]:
    """The user's settled usage summed over the ledger."""
    totals = UsageRecord.objects.filter(user=user, **filters).aggregate(
        requests=Sum("requests"),
        prompt=Sum("prompt_tokens"),
        completion=Sum("completion_tokens"),
        denied=Sum("denied"),
    )
    return {name: value or 0 for name, value in totals.items()}


def settled_ledger(user: Any, requests: int, **filters: Any) -> dict[str, int]:
    """The ledger once `requests` calls are settled: a server settles a completion after
    sending its answer, so the client may read the ledger first."""
    deadline = time.monotonic() + 10
    while True:
        book = ledger(user, **filters)
        if book["requests"] >= requests or time.monotonic() > deadline:
            return book
        time.sleep(0.01)
