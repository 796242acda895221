"""The engine configured from `QUOTAS`, one per process and Redis URL."""

from __future__ import annotations

import logging
import threading

from .conf import conf
from .engine import QuotaEngine, connect

logger = logging.getLogger("quotas")

_lock = threading.Lock()
_engines: dict[tuple[str | None, str], QuotaEngine] = {}


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


def reset_engines() -> None:
    """Forget every engine (tests switching Redis, or after fork)."""
    with _lock:
        _engines.clear()
