"""Money as the counters hold it: whole micro-USD."""

from __future__ import annotations

from decimal import Decimal


def to_micros(usd: Decimal | int) -> int:
    """USD to whole micro-USD, rounded up."""
    return int((Decimal(usd) * 1_000_000).to_integral_value(rounding="ROUND_CEILING"))


def from_micros(micros: int) -> Decimal:
    return (Decimal(micros) / 1_000_000).quantize(Decimal("0.000001"))
