"""Django configured for the bench process (and the processes it spawns)."""

from __future__ import annotations

import os


def configure(redis_url: str) -> None:
    """Set up Django with `bench.settings` on `redis_url`, unless it is set up already.

    Under pytest the suite's settings are in place, and the test adds the bench caches.
    """
    from django.conf import settings

    if settings.configured:
        return
    os.environ["DJANGO_SETTINGS_MODULE"] = "bench.settings"
    os.environ.setdefault("DJANGO_SECRET_KEY", "bench-only-secret-key")
    os.environ["BENCH_REDIS_URL"] = redis_url
    import django

    django.setup()
