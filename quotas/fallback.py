"""Graceful degradation: a cheaper model for callers running low."""

from __future__ import annotations

from .engine import Decision, Usage
from .limit_kinds import kind_of
from .policy import Quota


def running_low(quota: Quota, decision: Decision, charged: Usage | None = None) -> str | None:
    """The first limit that degrades (see `LimitKind.degrades`) with less than
    `degrade_at_percent` left, if any.

    `charged` is what a granted decision took, added back so the test is on what was left
    before this request.
    """
    percent = quota.degrade_at_percent
    if not percent:
        return None
    for state in decision.states:
        kind = kind_of(state.name, state.code)
        remaining = state.remaining
        if charged and decision.allowed:
            remaining += kind.amount_of(charged)
        low = remaining * 100 < percent * state.limit
        if kind.degrades and state.limit > 0 and low:
            return state.name
    return None


def serving_model(
    quota: Quota,
    requested: str,
    decision: Decision | None,
    charged: Usage | None = None,
) -> str:
    """The model to serve: the requested one, or the fallback when the caller runs low."""
    fallback = quota.fallback_model
    if not fallback or fallback == requested or decision is None:
        return requested
    return fallback if running_low(quota, decision, charged) else requested
