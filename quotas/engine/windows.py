"""Calendar windows (days, months) in a time zone, as microsecond bounds."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from .limits import Window


def _start_us(day: date, tz: ZoneInfo) -> int:
    return int(datetime.combine(day, time(0), tzinfo=tz).timestamp()) * 1_000_000


def _month_start(day: date, shift: int) -> date:
    index = day.year * 12 + day.month - 1 + shift
    return date(index // 12, index % 12 + 1, 1)


@lru_cache(maxsize=64)
def _around(time_zone: str, ordinal: int) -> tuple[tuple[Window, ...], tuple[Window, ...]]:
    tz = ZoneInfo(time_zone)
    today = date.fromordinal(ordinal)
    days = tuple(
        Window(
            "d",
            d.strftime("%Y%m%d"),
            _start_us(d, tz),
            _start_us(d + timedelta(days=1), tz),
        )
        for d in (today - timedelta(days=1), today, today + timedelta(days=1))
    )
    months = tuple(
        Window(
            "m",
            _month_start(today, shift).strftime("%Y%m"),
            _start_us(_month_start(today, shift), tz),
            _start_us(_month_start(today, shift + 1), tz),
        )
        for shift in (-1, 0, 1)
    )
    return days, months


def local_date(now_us: int, time_zone: str) -> date:
    return datetime.fromtimestamp(now_us / 1_000_000, ZoneInfo(time_zone)).date()


def windows_around(now_us: int, time_zone: str) -> tuple[tuple[Window, ...], tuple[Window, ...]]:
    """The previous, current and next day and month around `now_us`.

    The script picks among them by Redis's own clock, so app servers whose clocks drift
    by less than a day still agree on the window.
    """
    return _around(time_zone, local_date(now_us, time_zone).toordinal())


def current_windows(now_us: int, time_zone: str) -> tuple[Window, Window]:
    days, months = windows_around(now_us, time_zone)
    return days[1], months[1]
