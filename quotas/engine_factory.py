"""The engine configured from `QUOTAS`, one per process and Redis URL."""

from __future__ import annotations

import asyncio
import logging
import threading
import weakref

from .conf import conf
from .engine import QuotaEngine, connect
from .engine.aio import AsyncQuotaEngine, connect_async

logger = logging.getLogger("quotas")

_lock = threading.Lock()
_engines: dict[tuple[str | None, str], QuotaEngine] = {}
# redis.asyncio connections belong to the event loop that made them.
_async_engines: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[tuple[str | None, str], AsyncQuotaEngine]
] = weakref.WeakKeyDictionary()


def get_engine() -> QuotaEngine:
    """The engine for the configured Redis (connections are pooled per process)."""
    key = (conf.REDIS_URL, conf.KEY_PREFIX)
    engine = _engines.get(key)
    if engine is None:
        with _lock:
            engine = _engines.get(key)
            if engine is None:
                if key[0] is None:
                    logger.info("quotas: no REDIS_URL; counting in the embedded in-process store")
                engine = QuotaEngine(connect(key[0]), prefix=key[1])
                _engines[key] = engine
    return engine


def get_async_engine() -> AsyncQuotaEngine:
    """The `redis.asyncio` engine of the running event loop for the configured Redis."""
    key = (conf.REDIS_URL, conf.KEY_PREFIX)
    loop = asyncio.get_running_loop()
    with _lock:
        per_loop = _async_engines.setdefault(loop, {})
        engine = per_loop.get(key)
        if engine is None:
            engine = per_loop[key] = AsyncQuotaEngine(connect_async(key[0]), prefix=key[1])
    return engine


def reset_engines() -> None:
    """Forget every engine (tests switching Redis, or after fork)."""
    with _lock:
        _engines.clear()
        _async_engines.clear()
