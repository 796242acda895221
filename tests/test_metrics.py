"""The metrics of the quota path and who may read them at /metrics."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

import quotas
from quotas.models import AIModel, Tier, UserQuota

HELLO = [{"role": "user", "content": "Hello there"}]


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def user(db: None, mock_provider: Any) -> Any:
    model = AIModel.objects.create(
        name="gpt-4o-mini",
        input_price_per_million=Decimal("1"),
        output_price_per_million=Decimal("2"),
    )
    tier = Tier.objects.create(
        slug="metered", name="Metered", default_model=model, requests_per_day=1
    )
    user = get_user_model().objects.create_user("ada")
    UserQuota.objects.create(user=user, tier=tier)
    return user


def test_decisions_tokens_and_spend_are_counted(user) -> None:
    allowed = sample("quotas_decisions_total", outcome="allowed", limit="")
    denied = sample("quotas_decisions_total", outcome="denied", limit="requests_per_day")
    tokens = sample("quotas_tokens_total", model="gpt-4o-mini", tier="metered")
    spend = sample("quotas_spend_usd_total", model="gpt-4o-mini", tier="metered")
    latency = sample("quotas_decision_seconds_count")

    with quotas.reserve(user, messages=HELLO, max_tokens=10) as call:
        call.settle(prompt_tokens=1_000, completion_tokens=500)
    with pytest.raises(quotas.QuotaExceeded):
        quotas.reserve(user, messages=HELLO)

    assert sample("quotas_decisions_total", outcome="allowed", limit="") == allowed + 1
    assert (
        sample("quotas_decisions_total", outcome="denied", limit="requests_per_day") == denied + 1
    )
    assert sample("quotas_tokens_total", model="gpt-4o-mini", tier="metered") == tokens + 1_500
    assert sample("quotas_spend_usd_total", model="gpt-4o-mini", tier="metered") == pytest.approx(
        spend + 0.002
    )
    assert sample("quotas_decision_seconds_count") == latency + 2
    assert sample("quotas_ledger_mode") == 0


def test_loopback_reads_the_metrics(client, user) -> None:
    with quotas.reserve(user, messages=HELLO, max_tokens=10) as call:
        call.settle(prompt_tokens=1, completion_tokens=1)
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    text = response.content.decode()
    assert 'quotas_decisions_total{limit="",outcome="allowed"}' in text
    assert "# TYPE quotas_redis_errors_total counter" in text
    assert "quotas_ledger_mode 0.0" in text
    labels = {
        value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        for value in sample.labels.values()
    }
    assert {"allowed", "gpt-4o-mini", "metered"} <= labels
    assert not {f"u:{user.pk}", str(user.pk), "ada"} & labels  # no user in any label


def test_other_addresses_are_refused_unless_allowed(client, settings, db) -> None:
    assert client.get("/metrics", REMOTE_ADDR="203.0.113.9").status_code == 403
    settings.QUOTAS = {**settings.QUOTAS, "METRICS_ALLOWED_NETWORKS": ["203.0.113.0/24"]}
    assert client.get("/metrics", REMOTE_ADDR="203.0.113.9").status_code == 200
    assert client.get("/metrics").status_code == 403  # loopback is no longer listed


def test_redis_errors_and_the_ledger_mode_are_shown(user, monkeypatch) -> None:
    from quotas.engine import CountersUnavailable, QuotaEngine

    def unreachable(*args: Any, **kwargs: Any) -> Any:
        raise CountersUnavailable("connection refused")

    monkeypatch.setattr(QuotaEngine, "reserve", unreachable)
    errors = sample("quotas_redis_errors_total", operation="reserve")

    with quotas.reserve(user, messages=HELLO, max_tokens=10) as call:
        call.settle(prompt_tokens=1, completion_tokens=1)

    assert sample("quotas_redis_errors_total", operation="reserve") == errors + 1
    assert sample("quotas_ledger_mode") == 1
