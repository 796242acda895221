"""Benchmarks of the quota engine against its peers: `python -m bench` (or `make bench`)."""

from __future__ import annotations

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/12"
SIZES = (10, 1_000, 100_000)
