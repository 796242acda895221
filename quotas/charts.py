"""Bar charts as plain geometry, drawn as inline SVG by `quotas/chart.html`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

LARGE = (440, 130, 18, 20)  # width, height, room above and below the bars
SMALL = (120, 24, 1, 1)


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    title: str


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    baseline: float
    bars: tuple[Bar, ...]
    label: str  # e.g. "tokens per day, last 30 days"
    peak: str
    total: str
    first: str
    last: str
    small: bool


def usd(amount: Decimal | int | None) -> str:
    """Exact to the micro-dollar, without trailing zeros past the cents: "$0.14442", "$5.00"."""
    text = f"{Decimal(amount or 0):,.6f}".rstrip("0")
    whole, _, cents = text.partition(".")
    return f"${whole}.{cents.ljust(2, '0')}"


def _show(value: int | Decimal, money: bool) -> str:
    return usd(value) if money else f"{int(value):,}"


def bar_chart(
    days: list[date],
    values: Sequence[int | Decimal],
    metric: str,
    *,
    money: bool = False,
    small: bool = False,
) -> Chart:
    """One bar per day, scaled to the largest value."""
    width, height, above, below = SMALL if small else LARGE
    baseline = height - below
    room = baseline - above
    peak = max(values, default=0) or 1
    slot = width / max(1, len(days))
    bars = []
    for n, (day, value) in enumerate(zip(days, values, strict=True)):
        tall = round(float(Decimal(value) / Decimal(peak)) * room, 2)
        bars.append(
            Bar(
                x=round(n * slot + slot * 0.125, 2),
                y=round(baseline - tall, 2),
                width=round(slot * 0.75, 2),
                height=tall,
                title=f"{day.isoformat()}: {_show(value, money)} {'' if money else metric}".strip(),
            )
        )
    total: int | Decimal = sum(values, Decimal(0) if money else 0)
    return Chart(
        width=width,
        height=height,
        baseline=baseline,
        bars=tuple(bars),
        label=f"{metric} per day, last {len(days)} days",
        peak=_show(max(values, default=0), money),
        total=_show(total, money),
        first=days[0].strftime("%b %d") if days else "",
        last=days[-1].strftime("%b %d") if days else "",
        small=small,
    )
