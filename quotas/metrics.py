"""Prometheus metrics of the quota path, and the `/metrics` view that serves them.

Labels are bounded: outcomes, limit names, model names from the catalogue and tier slugs;
never users or keys. Under several worker processes set `PROMETHEUS_MULTIPROC_DIR` (an
empty directory, before the processes start) and the view sums every process's figures.
Without `prometheus_client` installed every function here does nothing.
"""

from __future__ import annotations

import ipaddress
import os
from typing import Any

from django.http import HttpRequest, HttpResponse, HttpResponseForbidden

from .conf import conf

try:
    import prometheus_client as prom
    from prometheus_client import multiprocess
except ImportError:  # pragma: no cover - the metrics extra is not installed
    prom = None  # type: ignore[assignment]

if prom is not None:
    DECISIONS = prom.Counter(
        "quotas_decisions",
        "Quota decisions by outcome (allowed, denied, soft) and the limit that refused.",
        ["outcome", "limit"],
    )
    TOKENS = prom.Counter("quotas_tokens", "Tokens settled, by model and tier.", ["model", "tier"])
    SPEND = prom.Counter(
        "quotas_spend_usd", "Spend settled in USD, by model and tier.", ["model", "tier"]
    )
    LATENCY = prom.Histogram(
        "quotas_decision_seconds",
        "Seconds one quota decision takes (the Redis round trip, or the ledger's).",
        buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
    )
    REDIS_ERRORS = prom.Counter(
        "quotas_redis_errors", "Redis calls that failed, by operation.", ["operation"]
    )
    LEDGER_MODE = prom.Gauge(
        "quotas_ledger_mode",
        "1 while budgets are decided from the ledger (Redis unreachable), else 0.",
        multiprocess_mode="livemax",
    )


def decided(outcome: str, limit: str | None, seconds: float) -> None:
    if prom is not None:
        DECISIONS.labels(outcome, limit or "").inc()
        LATENCY.observe(seconds)


def settled(model: str, tier: str, tokens: int, spend_micros: int) -> None:
    if prom is not None:
        TOKENS.labels(model, tier).inc(tokens)
        SPEND.labels(model, tier).inc(spend_micros / 1_000_000)


def redis_error(operation: str) -> None:
    if prom is not None:
        REDIS_ERRORS.labels(operation).inc()


def ledger_mode(active: bool) -> None:
    if prom is not None:
        LEDGER_MODE.set(1 if active else 0)


def _allowed(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in conf.METRICS_ALLOWED_NETWORKS)


def metrics_view(request: HttpRequest) -> HttpResponse:
    """The metrics in Prometheus's text format, for the addresses
    `QUOTAS["METRICS_ALLOWED_NETWORKS"]` allows (loopback by default); 403 for others."""
    if not _allowed(request.META.get("REMOTE_ADDR", "")):
        return HttpResponseForbidden("Metrics are not served to this address.\n")
    if prom is None:
        return HttpResponse("prometheus_client is not installed.\n", status=501)
    registry: Any = prom.REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = prom.CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return HttpResponse(prom.generate_latest(registry), content_type=prom.CONTENT_TYPE_LATEST)
