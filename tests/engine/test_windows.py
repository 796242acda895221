from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from quotas.engine import current_windows, windows_around
from quotas.engine.windows import local_date

HOUR_US = 3600 * 1_000_000
NY = "America/New_York"
PARIS = "Europe/Paris"


def us(zone: str, *fields: int) -> int:
    return int(datetime(*fields, tzinfo=ZoneInfo(zone)).timestamp()) * 1_000_000


def test_day_and_month_are_local_to_the_zone():
    # 23:59 on 31 January in New York is already 1 February in UTC.
    now = us(NY, 2024, 1, 31, 23, 59)
    day, month = current_windows(now, NY)
    assert (day.kind, day.label) == ("d", "20240131")
    assert (day.start_us, day.end_us) == (us(NY, 2024, 1, 31), us(NY, 2024, 2, 1))
    assert (month.kind, month.label) == ("m", "202401")
    assert (month.start_us, month.end_us) == (us(NY, 2024, 1, 1), us(NY, 2024, 2, 1))

    utc_day, utc_month = current_windows(now, "UTC")
    assert (utc_day.label, utc_month.label) == ("20240201", "202402")


def test_window_starts_at_local_midnight_inclusive():
    midnight = us(PARIS, 2024, 3, 1)
    assert current_windows(midnight, PARIS)[0].label == "20240301"
    assert current_windows(midnight, PARIS)[1].label == "202403"
    assert current_windows(midnight - 1, PARIS)[0].label == "20240229"
    assert current_windows(midnight - 1, PARIS)[1].label == "202402"


@pytest.mark.parametrize(
    ("zone", "day", "hours"),
    [
        (NY, date(2024, 3, 10), 23),
        (NY, date(2024, 11, 3), 25),
        (PARIS, date(2024, 3, 31), 23),
        (PARIS, date(2024, 10, 27), 25),
        (NY, date(2024, 7, 4), 24),
    ],
)
def test_dst_days_are_23_or_25_hours_long(zone, day, hours):
    noon = us(zone, day.year, day.month, day.day, 12)
    window, _ = current_windows(noon, zone)
    assert window.label == day.strftime("%Y%m%d")
    assert window.end_us - window.start_us == hours * HOUR_US
    assert window.start_us == us(zone, day.year, day.month, day.day)


def test_day_whose_midnight_does_not_exist_starts_at_its_first_instant():
    # Havana springs forward at midnight: 10 March 2024 begins at 01:00.
    zone = "America/Havana"
    window, _ = current_windows(us(zone, 2024, 3, 10, 12), zone)
    start = datetime.fromtimestamp(window.start_us / 1_000_000, ZoneInfo(zone))
    assert (start.date(), start.hour) == (date(2024, 3, 10), 1)
    assert window.end_us - window.start_us == 23 * HOUR_US
    previous, _ = current_windows(window.start_us - 1, zone)
    assert previous.label == "20240309"
    assert previous.end_us == window.start_us


def test_windows_around_gives_previous_current_and_next():
    days, months = windows_around(us(NY, 2024, 12, 31, 22), NY)
    assert [w.label for w in days] == ["20241230", "20241231", "20250101"]
    assert [w.label for w in months] == ["202411", "202412", "202501"]


@pytest.mark.parametrize("zone", ["UTC", NY, PARIS, "America/Havana", "Asia/Kolkata"])
def test_windows_tile_the_year_without_gaps(zone):
    tz = ZoneInfo(zone)
    day = date(2024, 1, 1)
    while day.year == 2024:
        now = int(datetime(day.year, day.month, day.day, 12, tzinfo=tz).timestamp() * 1e6)
        days, months = windows_around(now, zone)
        for windows in (days, months):
            assert windows[0].end_us == windows[1].start_us
            assert windows[1].end_us == windows[2].start_us
            assert windows[1].start_us <= now < windows[1].end_us
        assert local_date(days[1].start_us, zone) == day
        assert local_date(days[1].end_us - 1, zone) == day
        day += timedelta(days=1)
