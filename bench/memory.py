"""Memory: Redis bytes each active user costs, per limiter and limit size."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from functools import partial
from typing import Any

from quotas.engine import connect

from . import SIZES
from .guard import guarded
from .limiters import NAMES, Limiter, make


def user_bytes(client: Any, limiter: Limiter, user: int) -> tuple[int, int]:
    """(bytes, keys) of one user: `MEMORY USAGE` (every element sampled) over its keys."""
    keys = limiter.keys(client, user)
    return sum(int(client.memory_usage(key, samples=0) or 0) for key in keys), len(keys)


def _measure(
    client: Any, name: str, size: int, redis_url: str, users: int, done: int
) -> dict[str, Any]:
    limiter = make(name, size, redis_url, namespace=f"mem{size}-{uuid.uuid4().hex[:6]}")
    for user in range(1, users + 1):
        for _ in range(done):
            limiter.hit(user)
    measured = [user_bytes(client, limiter, user) for user in range(1, users + 1)]
    full_user = users + 1
    limiter.fill(full_user, size)
    at_limit, _ = user_bytes(client, limiter, full_user)
    return {
        "limiter": name,
        "limit": size,
        "requests_per_user": done,
        "users": users,
        "bytes_per_user": sum(b for b, _ in measured) / users,
        "keys_per_user": sum(k for _, k in measured) / users,
        "bytes_at_limit": at_limit,
    }


def run(
    redis_url: str,
    *,
    sizes: tuple[int, ...] = SIZES,
    users: int = 10,
    requests: int = 200,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """One row per (limiter, limit size).

    `bytes_per_user`: the mean over `users` users after `min(size, requests)` requests each;
    `bytes_at_limit`: one more user after as many admitted requests as the limit allows.
    """
    client = connect(redis_url)
    rows: list[dict[str, Any]] = []
    for size in sizes:
        done = min(size, requests)
        for name in NAMES:
            row = guarded(
                client,
                partial(_measure, client, name, size, redis_url, users, done),
                f"the memory of {name} at {size:,}",
                log,
            )
            rows.append(row)
            log(f"  {name} at {size:,}: {row['bytes_per_user']:.0f} B per user")
    client.close()
    return rows
