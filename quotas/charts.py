"""Bar charts as plain geometry (axes, gridlines, a limit line), drawn as inline SVG by
`quotas/chart.html`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

# viewBox width, height; room left (value labels), right, above, below (date labels)
LARGE = (400, 190, 52, 8, 12, 22)
SMALL = (120, 24, 0, 0, 1, 1)
TICKS = 4


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    title: str


@dataclass(frozen=True)
class Tick:
    at: float  # y (value ticks) or x (date ticks)
    label: str


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    left: int
    right: float  # x of the plot's right edge
    top: int
    baseline: float
    bars: tuple[Bar, ...]
    values: tuple[Tick, ...]  # gridlines with their value
    dates: tuple[Tick, ...]
    limit_y: float | None
    limit_label: str
    label: str  # e.g. "tokens per day"
    peak: str
    total: str
    small: bool

    def svg(self) -> SafeString:
        """The chart as a figure with inline SVG (built here: a template per bar is slow)."""
        parts = [
            f'<figure class="quotas-chart{" quotas-chart-small" if self.small else ""}">',
        ]
        if not self.small:
            limit = f" · {escape(self.limit_label)}" if self.limit_label else ""
            parts.append(
                f"<figcaption>{escape(self.label.capitalize())} · total {escape(self.total)}"
                f" · peak {escape(self.peak)}{limit}</figcaption>"
            )
        parts.append(
            f'<svg viewBox="0 0 {self.width} {self.height}" width="{self.width}" '
            f'height="{self.height}" role="img" '
            f'aria-label="{escape(self.label)}: total {escape(self.total)}">'
        )
        for tick in self.values:
            parts.append(
                f'<line class="quotas-gridline" x1="{self.left}" x2="{self.right}" '
                f'y1="{tick.at}" y2="{tick.at}"></line><text class="quotas-value" '
                f'x="{self.left - 4}" y="{tick.at}" dy="4" text-anchor="end">'
                f"{escape(tick.label)}</text>"
            )
        for bar in self.bars:
            parts.append(
                f'<rect x="{bar.x}" y="{bar.y}" width="{bar.width}" height="{bar.height}">'
                f"<title>{escape(bar.title)}</title></rect>"
            )
        parts.append(
            f'<line class="quotas-axis" x1="{self.left}" x2="{self.right}" '
            f'y1="{self.baseline}" y2="{self.baseline}"></line>'
        )
        if self.limit_y is not None:
            parts.append(
                f'<line class="quotas-limit-line" x1="{self.left}" x2="{self.right}" '
                f'y1="{self.limit_y}" y2="{self.limit_y}"><title>{escape(self.limit_label)}'
                "</title></line>"
            )
        for tick in self.dates:
            end = tick.at > self.right - 20  # the last date ends at the right edge
            parts.append(
                f'<text class="quotas-date" x="{self.right if end else tick.at}" '
                f'y="{self.height - 5}" text-anchor="{"end" if end else "middle"}">'
                f"{escape(tick.label)}</text>"
            )
        parts.append("</svg></figure>")
        return mark_safe("".join(parts))  # every text above is escaped


def usd(amount: Decimal | int | None) -> str:
    """Exact to the micro-dollar, without trailing zeros past the cents: "$0.14442", "$5.00"."""
    text = f"{Decimal(amount or 0):,.6f}".rstrip("0")
    whole, _, cents = text.partition(".")
    return f"${whole}.{cents.ljust(2, '0')}"


def _show(value: int | Decimal, money: bool) -> str:
    return usd(value) if money else f"{int(value):,}"


def _short(value: Decimal, money: bool) -> str:
    """An axis label: "0", "2.5k", "1.2M", "$0.50", "$1.2k"."""
    for size, suffix in ((Decimal(10**9), "B"), (Decimal(10**6), "M"), (Decimal(1000), "k")):
        if abs(value) >= size:
            text = f"{value / size:.1f}".rstrip("0").rstrip(".") + suffix
            return f"${text}" if money else text
    if money:
        return f"${value:.2f}" if value >= Decimal("0.01") or value == 0 else f"${value:.4f}"
    return f"{value:.1f}".rstrip("0").rstrip(".")


def nice_top(peak: Decimal) -> tuple[Decimal, Decimal]:
    """The axis's top and step: 1, 2, 2.5 or 5 times a power of ten, TICKS steps."""
    if peak <= 0:
        return Decimal(TICKS), Decimal(1)
    raw = peak / TICKS
    power = Decimal(10) ** math.floor(math.log10(raw))
    for factor in (1, 2, Decimal("2.5"), 5, 10):
        step = power * factor
        if step * TICKS >= peak:
            return step * TICKS, step
    return power * 10 * TICKS, power * 10  # not reached


def bar_chart(
    days: list[date],
    values: Sequence[int | Decimal],
    metric: str,
    *,
    money: bool = False,
    small: bool = False,
    limit: int | Decimal | None = None,
) -> Chart:
    """One bar per day on a value axis from 0 to above the peak (and the limit, if any)."""
    width, height, left, right, above, below = SMALL if small else LARGE
    baseline = height - below
    plot = width - left - right
    room = baseline - above
    peak = Decimal(max(values, default=0))
    if small:
        top, step = (peak or Decimal(1)), peak or Decimal(1)
    else:
        top, step = nice_top(max(peak, Decimal(limit or 0)))

    def y(value: int | Decimal) -> float:
        return round(baseline - float(min(Decimal(value), top) / top) * room, 2)

    slot = plot / max(1, len(days))
    bars = tuple(
        Bar(
            x=round(left + n * slot + slot * 0.125, 2),
            y=y(value),
            width=round(slot * 0.75, 2),
            height=round(baseline - y(value), 2),
            title=f"{day.isoformat()}: {_show(value, money)} {'' if money else metric}".strip(),
        )
        for n, (day, value) in enumerate(zip(days, values, strict=True))
    )
    ticks: tuple[Tick, ...] = ()
    dates: tuple[Tick, ...] = ()
    if not small:
        ticks = tuple(Tick(y(step * n), _short(step * n, money)) for n in range(TICKS + 1))
        every = max(1, math.ceil(len(days) / 5))
        dates = tuple(
            Tick(round(left + n * slot + slot / 2, 2), day.strftime("%b %d"))
            for n, day in enumerate(days)
            if (len(days) - 1 - n) % every == 0
        )
    total: int | Decimal = sum(values, Decimal(0) if money else 0)
    return Chart(
        width=width,
        height=height,
        left=left,
        right=width - right,
        top=above,
        baseline=baseline,
        bars=bars,
        values=ticks,
        dates=dates,
        limit_y=None if limit is None or small else y(limit),
        limit_label="" if limit is None else f"limit {_show(limit, money)}",
        label=f"{metric} per day",
        peak=_show(peak, money),
        total=_show(total, money),
        small=small,
    )
