"""Every kind of limit a tier can set, in one place.

A kind names the tier and quota field that holds it, the engine code that enforces it,
how people read it (label, unit) and how it is spent. The policy, the ledger mode, the
fallback model choice, the planning checks, the dashboard meters, `/v1/quota`, the
exceptions and the headers all derive from this table, so a new kind is added here (and
as a field on the models).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import Decimal

from .engine import Usage
from .engine import limits as codes
from .money import to_micros

PERIOD_SECONDS = {"rate": 60, "day": 86_400, "month": 2_592_000, "in_flight": 0}


@dataclass(frozen=True)
class LimitKind:
    """One kind of limit: `field` on tiers and quotas (also the limit's public name)."""

    field: str
    code: str  # the engine's: period then resource (see engine.limits)
    label: str  # as the dashboard and the admin show it
    unit: str  # "requests", "tokens" or "USD"
    every_request: bool = False  # charged by the throttle on every protected request
    degrades: bool = False  # running low on it serves the fallback model

    @property
    def period(self) -> str:
        """ "rate", "day", "month" or "in_flight"."""
        return {"r": "rate", "d": "day", "m": "month", "c": "in_flight"}[self.code[0]]

    @property
    def resource(self) -> str:
        """What it counts: "requests", "tokens" or "spend" (a Usage field)."""
        if self.code == codes.CONCURRENCY:
            return "requests"
        return {"r": "requests", "t": "tokens", "s": "spend"}[self.code[1]]

    @property
    def is_budget(self) -> bool:
        """Spent from a day or month window (the ledger can check it while Redis is down)."""
        return self.period in ("day", "month")

    @property
    def is_rate(self) -> bool:
        """Refills over time or frees when a call ends: an OpenAI `rate_limit_exceeded`."""
        return self.period in ("rate", "in_flight")

    @property
    def is_money(self) -> bool:
        return self.resource == "spend"

    @property
    def window_seconds(self) -> int:
        return PERIOD_SECONDS[self.period]

    def engine_amount(self, value: int | Decimal) -> int:
        """The tier's value as the engine counts it (USD become whole micro-USD)."""
        return to_micros(value) if self.is_money else int(value)

    def amount_of(self, usage: Usage) -> int:
        return int(getattr(usage, self.resource))


KINDS: tuple[LimitKind, ...] = (
    LimitKind(
        "requests_per_minute",
        codes.RATE_REQUESTS,
        "Rate (burst)",
        "requests",
        every_request=True,
    ),
    LimitKind("tokens_per_minute", codes.RATE_TOKENS, "Tokens per minute", "tokens"),
    LimitKind(
        "requests_per_day",
        codes.DAY_REQUESTS,
        "Requests today",
        "requests",
        every_request=True,
        degrades=True,
    ),
    LimitKind("tokens_per_day", codes.DAY_TOKENS, "Tokens today", "tokens", degrades=True),
    LimitKind("spend_per_day", codes.DAY_SPEND, "Spend today", "USD", degrades=True),
    LimitKind("tokens_per_month", codes.MONTH_TOKENS, "Tokens this month", "tokens"),
    LimitKind("spend_per_month", codes.MONTH_SPEND, "Spend this month", "USD", degrades=True),
    LimitKind("max_concurrent_requests", codes.CONCURRENCY, "In flight", "requests"),
)

# The deployment-wide cap (`QUOTAS["ORG_SPEND_PER_MONTH"]`), charged to every AI call.
ORG_SPEND_PER_MONTH = LimitKind(
    "org_spend_per_month", codes.MONTH_SPEND, "Organisation spend this month", "USD"
)

BY_FIELD = {kind.field: kind for kind in (*KINDS, ORG_SPEND_PER_MONTH)}
BY_CODE = {kind.code: kind for kind in KINDS}
BUDGETS = tuple(kind for kind in KINDS if kind.is_budget)


def kind_of(name: str, code: str) -> LimitKind:
    """The kind of a limit state: by its name, else one read from its engine code (the
    provider limiter's own limits, for instance)."""
    kind = BY_FIELD.get(name)
    if kind is None and code in BY_CODE:
        kind = replace(BY_CODE[code], field=name)
    if kind is None:
        unit = {"t": "tokens", "s": "USD"}.get(code[1], "requests")
        kind = LimitKind(name, code, name.replace("_", " ").capitalize(), unit)
    return kind
