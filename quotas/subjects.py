"""Whose counters a decision charges: the names of subjects in Redis keys."""

from __future__ import annotations

ORG_SUBJECT = "org"


def user_subject(user_id: int) -> str:
    return f"u:{user_id}"
