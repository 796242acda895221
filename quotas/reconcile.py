"""Reconciliation: each user's Redis window counters against the ledger, and their repair.

Redis is consistent when a window's counters equal the ledger's totals plus what the
reservations still in flight (leases not yet settled) took from that window.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import redis
from django.contrib.auth import get_user_model

from .conf import conf
from .engine import (
    Policy,
    QuotaEngine,
    Usage,
    Window,
    current_windows,
    window_counters,
    window_fields,
)
from .ledger import ledger_usage, ledger_usages, level_usage, window_days
from .models import UserQuota
from .subjects import team_subject, user_subject

FIELDS = ("requests", "tokens", "spend")
ATTEMPTS = 5  # reads of one user before giving up on counters that keep changing
BATCH = 500  # users whose ledger is read together


@dataclass(frozen=True)
class WindowCheck:
    """One user's counters in one window: Redis, the ledger and the reservations in flight."""

    user_id: int
    username: str
    window: Window
    redis: Usage
    ledger: Usage
    in_flight: Usage
    fixed: bool = False

    def drift(self, field: str) -> int:
        expected: int = getattr(self.ledger, field) + getattr(self.in_flight, field)
        return int(getattr(self.redis, field)) - expected

    @property
    def drifted(self) -> tuple[str, ...]:
        return tuple(field for field in FIELDS if self.drift(field))

    @property
    def expected(self) -> Usage:
        return Usage(*(getattr(self.ledger, f) + getattr(self.in_flight, f) for f in FIELDS))


def users_to_check(now_us: int, username: str | None = None) -> Any:
    """(id, username) of every user with ledger rows this month, or of the one named."""
    User = get_user_model()
    users = User.objects.order_by("pk")
    if username is None:
        first, last = window_days(current_windows(now_us, conf.TIME_ZONE)[1])
        users = users.filter(usage_records__day__gte=first, usage_records__day__lte=last)
    else:
        users = users.filter(**{User.USERNAME_FIELD: username})
    return users.distinct().values_list("pk", User.USERNAME_FIELD)


def in_flight(leases: Iterable[tuple[Any, float]], window: Window, lease_us: int) -> Usage:
    """What the leases not yet settled (member, expiry in us) hold in `window`.

    A lease member is "id:requests:tokens:spend"; a reservation was charged to the window
    of its start, its expiry less the lease duration.
    """
    totals = [0, 0, 0]
    for member, expiry in leases:
        text = member.decode() if isinstance(member, bytes) else str(member)
        parts = text.split(":")
        if len(parts) != 4 or not window.start_us <= int(expiry) - lease_us < window.end_us:
            continue
        for i, amount in enumerate(parts[1:]):
            totals[i] += int(amount)
    return Usage(*totals)


def check_user(
    engine: QuotaEngine, user_id: int, username: str, *, fix: bool = False
) -> list[WindowCheck]:
    """The user's current day and month against the ledger; with `fix`, repaired.

    The counters and the leases are read in one watched transaction, and a repair is
    applied only if neither changed in between, so concurrent reservations stay counted.
    """
    team_id = UserQuota.objects.filter(user_id=user_id).values_list("team_id", flat=True).first()
    subject = user_subject(user_id, team_id)
    return check_subject(
        engine, subject, lambda w: ledger_usage(user_id, w), user_id, username, fix=fix
    )


def check_team(engine: QuotaEngine, team_id: int, *, fix: bool = False) -> list[WindowCheck]:
    """A team's current day and month against its ledger; with `fix`, repaired."""
    subject = team_subject(team_id)
    return check_subject(engine, subject, lambda w: level_usage(subject, w), 0, subject, fix=fix)


def check_subject(
    engine: QuotaEngine,
    subject: str,
    read_ledger: Callable[[Window], Usage],
    user_id: int,
    username: str,
    *,
    fix: bool = False,
    seed: Callable[[Window], Usage] | None = None,
) -> list[WindowCheck]:
    """One subject's current day and month against `read_ledger`; with `fix`, repaired.
    A window missing from Redis is seeded from `seed` (by default `read_ledger`)."""
    seeder = seed or read_ledger
    policy = Policy(time_zone=conf.TIME_ZONE, track_usage=True, rehydrate=True)
    lease_us = int(conf.LEASE_SECONDS * 1_000_000)
    checks: list[WindowCheck] = []
    for _attempt in range(ATTEMPTS):
        # Peeking creates a missing window from the ledger, as any decision would.
        decision = engine.peek(subject, policy, seeder=lambda _s, w: seeder(w))
        if decision.day is None or decision.month is None:  # pragma: no cover - always set
            raise RuntimeError("The engine did not say which windows are current.")
        windows = (decision.day, decision.month)
        state_key, lease_key = engine.state_key(subject), engine.key(subject, "lease")
        with engine.client.pipeline(transaction=True) as pipe:
            pipe.watch(lease_key, state_key)
            # The ledger is read once the counters are watched: a settlement writes the
            # ledger before it releases its lease, so one that lands in between is either
            # in both readings (counted twice, never missed) or makes the repair retry.
            ledgers = [read_ledger(w) for w in windows]
            # Every lease still in the set counts: the window holds its reservation until
            # it is settled, expired or not (a late settlement still finds it).
            leases = pipe.zrange(lease_key, 0, -1, withscores=True)
            state = pipe.hgetall(state_key)
            counters = [window_counters(state, w) for w in windows]
            if None in counters:
                continue  # expired or flushed since the peek: seed it again
            checks = _window_checks(user_id, username, windows, counters, ledgers, leases, lease_us)
            if not fix or not any(check.drifted for check in checks):
                return checks
            pipe.multi()
            repair: dict[str, int] = {}
            for check in checks:
                if check.drifted:
                    target = check.expected
                    amounts = (target.requests, target.tokens, target.spend)
                    repair.update(zip(window_fields(check.window), amounts, strict=True))
            pipe.hset(state_key, mapping=repair)
            try:
                pipe.execute()
            except redis.WatchError:
                continue  # a reservation or settlement came in between: read again
            return [replace(check, fixed=bool(check.drifted)) for check in checks]
    return checks  # still changing: reported, not repaired


def _window_checks(
    user_id: int,
    username: str,
    windows: Sequence[Window],
    counters: Sequence[Usage | None],
    ledgers: Sequence[Any],
    leases: Any,
    lease_us: int,
) -> list[WindowCheck]:
    """A check of each window whose counters and ledger reading are both there."""
    return [
        WindowCheck(user_id, username, window, values, ledger, in_flight(leases, window, lease_us))
        for window, values, ledger in zip(windows, counters, ledgers, strict=True)
        if values is not None and ledger is not None
    ]


def reconcile(
    engine: QuotaEngine, users: Iterable[tuple[int, str]], *, fix: bool = False
) -> Iterator[WindowCheck]:
    """Every window check of every user, in order.

    `BATCH` users are read at once (three queries and one Redis pipeline a batch); a user
    whose counters look drifted, or are missing, is checked again alone, the ledger read
    while the counters are watched, before anything is reported or repaired.
    """
    batch: list[tuple[int, str]] = []
    for user in users:
        batch.append(user)
        if len(batch) == BATCH:
            yield from _check_batch(engine, batch, fix)
            batch = []
    if batch:
        yield from _check_batch(engine, batch, fix)


def _check_batch(
    engine: QuotaEngine, batch: list[tuple[int, str]], fix: bool
) -> Iterator[WindowCheck]:
    """The batch's counters and leases read in one pipeline, against its ledger read in
    three queries; a user with a window missing or drifted is checked alone."""
    ids = [user_id for user_id, _ in batch]
    teams = dict(UserQuota.objects.filter(user_id__in=ids).values_list("user_id", "team_id"))
    windows = current_windows(int(time.time() * 1_000_000), conf.TIME_ZONE)
    known = ledger_usages(ids, *windows)
    lease_us = int(conf.LEASE_SECONDS * 1_000_000)
    subjects = [user_subject(user_id, teams.get(user_id)) for user_id in ids]
    with engine.client.pipeline(transaction=False) as pipe:
        for subject in subjects:
            pipe.zrange(engine.key(subject, "lease"), 0, -1, withscores=True)
            pipe.hgetall(engine.state_key(subject))
        replies = pipe.execute()
    for i, (user_id, username) in enumerate(batch):
        leases, state = replies[2 * i : 2 * i + 2]
        counters = [window_counters(state, window) for window in windows]
        ledgers = [known.get((user_id, window.label)) for window in windows]
        checks = _window_checks(user_id, username, windows, counters, ledgers, leases, lease_us)
        if len(checks) < len(windows) or any(check.drifted for check in checks):
            # Missing (seeded as a decision would) or drifted: read again, exactly.
            checks = check_user(engine, user_id, username, fix=fix)
        yield from checks
