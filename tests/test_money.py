"""Money in micro-USD: never rounded in the caller's favour."""

from __future__ import annotations

from decimal import Decimal

from quotas.money import from_micros, to_micros


def test_usd_to_micros_rounds_up():
    assert to_micros(Decimal("1")) == 1_000_000
    assert to_micros(Decimal("0.0000001")) == 1
    assert to_micros(Decimal("12.5")) == 12_500_000


def test_micros_to_usd_keeps_six_places():
    assert from_micros(1) == Decimal("0.000001")
    assert str(from_micros(12_500_000)) == "12.500000"
    assert to_micros(from_micros(987_654_321)) == 987_654_321
