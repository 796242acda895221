"""Alert thresholds: which percents of which limits alert, and firing each crossing once.

A settled call's limit states (from the decision that reserved it, moved to what the call
really used) are compared to the thresholds in memory; only a state at or past one reaches
the database, where a unique constraint lets one alert per subject, limit, percent and
window exist, however many processes see the crossing at once.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from decimal import Decimal
from functools import partial
from typing import Any

from django.db import IntegrityError, transaction

from . import policy
from .conf import conf
from .engine import Decision, Usage
from .limit_kinds import BY_FIELD
from .models import Alert, AlertDelivery, AlertRule
from .money import from_micros

# A settled call whose estimated usage is this many percentage points below a threshold
# (or past it) reads the counters again to know for sure.
NEAR_PERCENT = 10
# A margin past every threshold: `crossings` then lists every one not fired yet.
EVERY_THRESHOLD = 1_000_000

NOTHING = Usage()

# (owner kind, owner key) -> limit field ("" for every limit) -> percents
Rules = dict[tuple[str, Any], dict[str, tuple[int, ...]]]


@dataclass(frozen=True)
class Crossing:
    """A limit of a user or team at or past one of its thresholds."""

    user_id: int | None
    team_id: int | None
    subject: str
    limit: str
    percent: int
    window: str
    used: Decimal
    limit_value: Decimal


def _load_rules() -> Rules:
    rules: dict[tuple[str, Any], dict[str, set[int]]] = {}
    rows = AlertRule.objects.values_list("tier__slug", "team_id", "limit", "percent")
    for tier_slug, team_id, limit, percent in rows:
        owner = ("team", team_id) if team_id is not None else ("tier", tier_slug)
        rules.setdefault(owner, {}).setdefault(limit, set()).add(percent)
    return {
        owner: {limit: tuple(sorted(p)) for limit, p in by_limit.items()}
        for owner, by_limit in rules.items()
    }


def rules() -> Rules:
    """Every alert rule, cached per process like quotas (dropped when a rule changes)."""
    return policy.cache.get(("alert_rules",), _load_rules)


def thresholds(owners: tuple[tuple[str, Any], ...], limit: str) -> tuple[int, ...]:
    """The percents of `limit` that alert for the first of `owners` with rules of its own,
    else `QUOTAS["ALERT_THRESHOLDS"]`."""
    table = rules()
    for owner in owners:
        by_limit = table.get(owner)
        if by_limit:
            return tuple(sorted({*by_limit.get(limit, ()), *by_limit.get("", ())}))
    return conf.ALERT_THRESHOLDS


class FiredMemo:
    """Crossings this process already saw stored: later calls skip the database."""

    size = 10_000

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: set[tuple[str, str, int, str]] = set()

    def __contains__(self, key: tuple[str, str, int, str]) -> bool:
        return key in self._seen

    def add(self, key: tuple[str, str, int, str]) -> None:
        with self._lock:
            if len(self._seen) >= self.size:
                self._seen.clear()
            self._seen.add(key)

    def clear(self) -> None:
        with self._lock:
            self._seen.clear()


fired = FiredMemo()


def crossings(
    user_id: int,
    quota: policy.Quota,
    decision: Decision,
    delta: Usage = NOTHING,
    *,
    margin: int = 0,
) -> list[Crossing]:
    """The thresholds the user's and team's budget limits are at or past (less `margin`
    percentage points), once `delta` is applied to the decision's states; those already
    stored by this process left out. No Redis; the database only to load the rules."""
    out = []
    for state in decision.states:
        level, _, name = state.name.rpartition(".")
        kind = BY_FIELD.get(name)
        if kind is None or not kind.is_budget or state.limit <= 0 or level not in ("", "team"):
            continue
        used = state.used + getattr(delta, kind.resource)
        window = decision.day if kind.period == "day" else decision.month
        if window is None:
            continue
        if level == "team":
            if quota.team is None or quota.team_id is None:
                continue
            owners: tuple[tuple[str, Any], ...] = (
                ("team", quota.team_id),
                ("tier", quota.team.tier_slug),
            )
            subject = f"t:{quota.team_id}"
            who: tuple[int | None, int | None] = (None, quota.team_id)
        else:
            owners = (("tier", quota.tier_slug),)
            subject, who = f"u:{user_id}", (user_id, None)
        for percent in thresholds(owners, name):
            if used * 100 < state.limit * (percent - margin):
                break
            if (subject, name, percent, window.label) in fired:
                continue
            scale = from_micros if kind.is_money else Decimal
            out.append(
                Crossing(
                    *who,
                    subject=subject,
                    limit=name,
                    percent=percent,
                    window=window.label,
                    used=scale(used),
                    limit_value=scale(state.limit),
                )
            )
    return out


def fire(crossings: list[Crossing]) -> list[Alert]:
    """Store each crossing's alert and its deliveries, unless one exists already; the
    `threshold_crossed` signal goes out for each new one once it is committed."""
    from .alert_outbox import deliveries_for
    from .signals import threshold_crossed

    new = []
    for crossing in crossings:
        key = (crossing.subject, crossing.limit, crossing.percent, crossing.window)
        try:
            with transaction.atomic():
                alert = Alert.objects.create(
                    user_id=crossing.user_id,
                    team_id=crossing.team_id,
                    subject=crossing.subject,
                    limit=crossing.limit,
                    percent=crossing.percent,
                    window=crossing.window,
                    used=crossing.used,
                    limit_value=crossing.limit_value,
                )
                AlertDelivery.objects.bulk_create(deliveries_for(alert))
        except IntegrityError:
            pass  # another call (here or in another process) fired it first
        else:
            new.append(alert)
            transaction.on_commit(partial(threshold_crossed.send, sender=Alert, alert=alert))
        fired.add(key)
    return new
