"""Quota counters in Redis: plain values in, decisions out. No Django here."""

from __future__ import annotations

from .engine import CountersUnavailable, QuotaEngine, Seeder, window_counters, window_fields
from .limits import Decision, Level, Limit, LimitState, Policy, Reservation, Usage, Window
from .store import connect, embedded
from .windows import current_windows, windows_around

__all__ = [
    "CountersUnavailable",
    "Decision",
    "Level",
    "Limit",
    "LimitState",
    "Policy",
    "QuotaEngine",
    "Reservation",
    "Seeder",
    "Usage",
    "Window",
    "connect",
    "current_windows",
    "embedded",
    "window_counters",
    "window_fields",
    "windows_around",
]
