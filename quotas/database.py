"""ORM work from async code: `sync_to_async`, or a few worker threads shared by every
request of the ASGI views.

Django gives each ASGI request a thread of its own for `sync_to_async` calls, and that
thread's database connection stays open until the response ends: a thousand slow streams
would hold a thousand connections. The async `/v1/` views call `use_orm_threads()`, and
from then on the ORM calls of their request (the API key, the quota and catalogue, the
ledger row) run in `THREADS` threads instead, each call on a connection closed after it,
so a process never holds more than `THREADS` connections. Everywhere else (the users' own
async code, their tests inside a transaction) the calls stay on `sync_to_async`.
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from asgiref.sync import sync_to_async
from django.core.exceptions import SynchronousOnlyOperation
from django.db import connections

from . import policy

THREADS = 8

P = ParamSpec("P")
R = TypeVar("R")

_executor = ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="quotas-orm")
_pooled: contextvars.ContextVar[bool] = contextvars.ContextVar("quotas_orm_threads", default=False)


def use_orm_threads() -> None:
    """Run the ORM calls of the current request (its task, and tasks it starts) in the pool."""
    _pooled.set(True)


def closing_connections(fn: Callable[P, R]) -> Callable[P, R]:
    """`fn`, closing the calling thread's database connections after it (for a thread
    outside Django's request cycle, which would never close them)."""

    @functools.wraps(fn)
    def closing(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        finally:
            connections.close_all()

    return closing


def in_orm_thread(fn: Callable[P, R]) -> Callable[P, Awaitable[R]]:
    """`fn` as a coroutine function: in a pool thread if the request uses them, else
    with `sync_to_async`."""
    pooled = sync_to_async(closing_connections(fn), thread_sensitive=False, executor=_executor)
    plain = sync_to_async(fn)

    async def run(*args: P.args, **kwargs: P.kwargs) -> R:
        return await (pooled if _pooled.get() else plain)(*args, **kwargs)

    return run


async def without_io_if_cached(fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """`fn(*args, **kwargs)` on the event loop if the policy cache answers every lookup it
    makes (no query, no thread switch), else `in_orm_thread(fn)(...)`.

    `fn` must leave nothing half done when a lookup raises `NotCached` (it runs again).
    """
    try:
        with policy.cached_only():
            return fn(*args, **kwargs)
    except (policy.NotCached, SynchronousOnlyOperation):
        # Django refuses a query on the event loop before sending it: nothing was done.
        return await in_orm_thread(fn)(*args, **kwargs)
