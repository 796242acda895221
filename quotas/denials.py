"""How a refusal reads: which limit, what the request needed against what was left, when
it resets, and whether retrying soon can help."""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from .engine import Decision, Limit, LimitState, Usage
from .limit_kinds import LimitKind, kind_of
from .money import from_micros


def per_minute(limit: Limit) -> int:
    """A rate limit as people set it: per minute (its burst is apart)."""
    return round(limit.amount * 60 / limit.interval)


def shown_limit(state: LimitState, limits: Iterable[Limit] = ()) -> int:
    """The limit as set: a rate per minute, not its burst (the engine's bucket size)."""
    if state.code[0] == "r":
        for limit in limits:
            if limit.name == state.name and limit.code == state.code:
                return per_minute(limit)
    return state.limit


def denied_state(decision: Decision) -> tuple[LimitState | None, LimitKind | None]:
    """The limit that refused, and its kind; (None, None) if no limit state says."""
    state = next((s for s in decision.states if s.name == decision.denied_by), None)
    return state, None if state is None else kind_of(state.name, state.code)


def is_retryable(decision: Decision) -> bool:
    """A rate or concurrency limit frees up soon; a day, month or spend budget does not
    (until its window ends), so SDKs should not retry it."""
    _, kind = denied_state(decision)
    return kind is None or kind.is_rate


def usd(micros: int) -> str:
    """$1.00, $0.0125: cents when they are exact, else up to micro-USD."""
    value = from_micros(micros)
    if micros % 10_000 == 0:
        return f"${value:.2f}"
    text = format(value.normalize(), "f")
    return f"${text}"


def amount(kind: LimitKind, value: int) -> str:
    if kind.is_money:
        return usd(value)
    unit = kind.unit if value != 1 else kind.unit.rstrip("s")
    return f"{value} {unit}"


def duration(seconds: float) -> str:
    """ "45 s", "3 min 5 s", "17 h 28 min", "12 d 4 h" (rounded up to the second)."""
    whole = max(0, math.ceil(seconds))
    days, rest = divmod(whole, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        parts = [(days, "d"), (hours, "h")]
    elif hours:
        parts = [(hours, "h"), (minutes, "min")]
    elif minutes:
        parts = [(minutes, "min"), (secs, "s")]
    else:
        return f"{secs} s"
    return " ".join(f"{n} {unit}" for n, unit in parts if n or unit == parts[0][1])


def reset_time(now_us: int, after: float, time_zone: str) -> str:
    """ "00:00 UTC" within a day, else with its date: "2026-12-01 00:00 CET"."""
    zone = ZoneInfo(time_zone)
    moment = datetime.fromtimestamp(round(now_us / 1_000_000 + after), tz=UTC).astimezone(zone)
    shown = moment.strftime("%H:%M" if after < 86_400 else "%Y-%m-%d %H:%M")
    return f"{shown} {moment.tzname()}"


def message(
    decision: Decision,
    *,
    limits: Iterable[Limit] = (),
    asked: Usage | None = None,
    time_zone: str = "UTC",
) -> str:
    """The refusal in words: the limit, what the request needed against what was left,
    and when it resets (a budget) or when to retry (a rate)."""
    name = decision.denied_by or "a limit"
    state, kind = denied_state(decision)
    wait = max(1, math.ceil(decision.retry_after))
    if state is None or kind is None:
        return f"Rate limit reached for {name}. Retry after {wait} s."
    if kind.period == "in_flight":
        return (
            f"Too many concurrent requests: your limit {name} is {state.limit} and "
            f"{state.used} are in flight. Retry after {wait} s."
        )
    left = f"{amount(kind, state.remaining)} left"
    if asked is not None:
        up_to = "" if kind.resource == "requests" else "up to "
        left = f"this request needs {up_to}{amount(kind, kind.amount_of(asked))}, with {left}"
    if kind.is_rate:
        rate = shown_limit(state, tuple(limits))
        burst = f", {state.limit} at once" if state.limit != rate else ""
        return (
            f"Rate limit reached for {name} ({rate} {kind.unit} per minute{burst}): "
            f"{left}. Retry after {wait} s."
        )
    return (
        f"You exceeded your quota: {name} is {amount(kind, state.limit)}; {left}. "
        f"It resets at {reset_time(decision.now_us, decision.retry_after, time_zone)}, "
        f"in {duration(decision.retry_after)}."
    )
