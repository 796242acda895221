"""django-ai-quotas: per-user quotas for AI APIs, enforced atomically in Redis."""

from __future__ import annotations

__version__ = "0.1.0"
