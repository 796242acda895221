"""django-ai-quotas: per-user quotas for AI APIs, enforced atomically in Redis.

The public API (`quotas.reserve`, `quotas.metered_openai`, the exceptions...) is imported
on first use, so importing `quotas` before Django is set up does not fail.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_PUBLIC = {
    "reserve": "calls",
    "areserve": "calls",
    "MeteredCall": "calls",
    "metered_openai": "metered",
    "metered_async_openai": "metered",
    "QuotaError": "exceptions",
    "QuotaExceeded": "exceptions",
    "QuotaBlocked": "exceptions",
    "NoTier": "exceptions",
    "ProviderBusy": "exceptions",
    "QuotaUnavailable": "exceptions",
    "InvalidRequest": "exceptions",
}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'quotas' has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f"quotas.{module}"), name)
