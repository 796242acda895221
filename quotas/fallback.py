"""Graceful degradation: a cheaper model for callers running low."""

from __future__ import annotations

from .engine import Decision
from .policy import Quota

# Limits whose running low switches a caller to the fallback model.
WATCHED = ("dt", "dr", "ms")


def running_low(
    quota: Quota, decision: Decision, charged: dict[str, int] | None = None
) -> str | None:
    """The first watched limit with less than `degrade_at_percent` left, if any.

    `charged` (amounts by limit code) is what a granted decision took, added back so the
    test is on what was left before this request.
    """
    percent = quota.degrade_at_percent
    if not percent:
        return None
    for state in decision.states:
        remaining = state.remaining
        if charged and decision.allowed:
            remaining += charged.get(state.code, 0)
        low = remaining * 100 < percent * state.limit
        if state.code in WATCHED and state.limit > 0 and low:
            return state.name
    return None


def serving_model(
    quota: Quota,
    requested: str,
    decision: Decision | None,
    charged: dict[str, int] | None = None,
) -> str:
    """The model to serve: the requested one, or the fallback when the caller runs low."""
    fallback = quota.fallback_model
    if not fallback or fallback == requested or decision is None:
        return requested
    return fallback if running_low(quota, decision, charged) else requested
