from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

LocalTime = Callable[..., float]


@pytest.fixture
def local_time() -> LocalTime:
    """Seconds since the epoch of a wall-clock time in a zone: local_time(zone, y, m, d, ...)."""

    def at(zone: str, *fields: int, fold: int = 0) -> float:
        return datetime(*fields, tzinfo=ZoneInfo(zone), fold=fold).timestamp()

    return at
