"""Settings of the bench process: the project's, with the peers' caches on the bench Redis."""

from __future__ import annotations

import os

from quotaproject.settings import *  # noqa: F403

from . import DEFAULT_REDIS_URL
from .limiters import RATELIMIT_CACHE, cache_settings

BENCH_REDIS_URL = os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS_URL)
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    **cache_settings(BENCH_REDIS_URL),
}
RATELIMIT_USE_CACHE = RATELIMIT_CACHE
QUOTAS = {"REDIS_URL": BENCH_REDIS_URL, "KEY_PREFIX": "bench-q"}
