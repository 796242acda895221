"""Policies and a fixed clock shared by the engine tests."""

from __future__ import annotations

from quotas.engine import Limit, Policy

NOW = 1_718_186_400.0  # 2024-06-12 10:00 UTC
PARIS = "Europe/Paris"

# Every kind of limit at once, in a time zone other than UTC.
FULL = Policy(
    (
        Limit("requests per minute", "rr", 60, burst=10),
        Limit("tokens per minute", "rt", 100_000),
        Limit("requests per day", "dr", 100),
        Limit("tokens per day", "dt", 1_000),
        Limit("spend per day", "ds", 5_000_000),
        Limit("requests per month", "mr", 1_000),
        Limit("tokens per month", "mt", 10_000),
        Limit("spend per month", "ms", 50_000_000),
        Limit("concurrent requests", "cc", 3),
    ),
    time_zone=PARIS,
)
