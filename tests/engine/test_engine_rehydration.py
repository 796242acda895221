from __future__ import annotations

import time

from quotas.engine import Limit, Policy, Usage, Window, current_windows

NY = "America/New_York"
LAST_MINUTE = 1_706_763_540.0  # 2024-01-31 23:59 in New York, 04:59 UTC on 1 February

POLICY = Policy(
    (
        Limit("requests per day", "dr", 100),
        Limit("tokens per day", "dt", 2_000),
        Limit("tokens per month", "mt", 10_000),
        Limit("concurrent requests", "cc", 5),
    ),
    time_zone=NY,
)


class Ledger:
    """A seeder standing in for the database: totals per window label, calls recorded."""

    def __init__(self, **totals: Usage) -> None:
        self.totals = totals
        self.calls: list[tuple[str, str, str]] = []

    def __call__(self, subject: str, window: Window) -> Usage:
        self.calls.append((subject, window.kind, window.label))
        return self.totals.get(f"{window.kind}{window.label}", Usage())


def test_missing_windows_are_seeded_before_deciding(engine):
    ledger = Ledger(
        d20240131=Usage(requests=5, tokens=1_500), m202401=Usage(requests=40, tokens=9_000)
    )
    denied = engine.reserve("u", POLICY, tokens=600, now=LAST_MINUTE, seeder=ledger)
    assert not denied.allowed
    assert denied.denied_by == "tokens per day"
    assert denied.state("dt").used == 1_500
    assert ledger.calls == [("u", "d", "20240131"), ("u", "m", "202401")]

    granted = engine.reserve("u", POLICY, tokens=500, now=LAST_MINUTE, seeder=ledger)
    assert granted.allowed
    assert [granted.state(code).used for code in ("dr", "dt", "mt")] == [6, 2_000, 9_500]
    assert len(ledger.calls) == 2  # the windows exist now


def test_a_flushed_subject_the_ledger_reports_spent_stays_denied(engine, redis_client):
    assert engine.reserve("u", POLICY, tokens=2_000, now=LAST_MINUTE, seeder=Ledger()).allowed
    redis_client.flushdb()

    ledger = Ledger(
        d20240131=Usage(requests=1, tokens=2_000), m202401=Usage(requests=1, tokens=2_000)
    )
    denied = engine.reserve("u", POLICY, tokens=1, now=LAST_MINUTE, seeder=ledger)
    assert not denied.allowed
    assert denied.denied_by == "tokens per day"
    assert denied.retry_after == 60.0
    assert denied.day_usage == Usage(requests=1, tokens=2_000)
    # A new day: the ledger holds nothing for it, the month still has room.
    assert engine.reserve("u", POLICY, tokens=1, now=LAST_MINUTE + 60, seeder=ledger).allowed


def test_an_existing_window_is_not_reseeded(engine):
    ledger = Ledger(d20240131=Usage(tokens=100))
    decision = engine.reserve("u", POLICY, tokens=10, now=LAST_MINUTE, seeder=ledger)
    assert engine.seed("u", decision.day, Usage(tokens=1_999)) is False
    assert engine.seed("u", decision.month, Usage(tokens=1_999)) is False

    again = engine.reserve(
        "u", POLICY, tokens=10, now=LAST_MINUTE, seeder=Ledger(d20240131=Usage(tokens=5))
    )
    assert again.state("dt").used == 120
    assert again.state("mt").used == 20
    assert len(ledger.calls) == 2


def test_seed_creates_a_missing_window(engine):
    day, _ = current_windows(int((LAST_MINUTE - 86_400) * 1_000_000), NY)  # 30 January
    now_us = int((LAST_MINUTE - 86_400) * 1_000_000)
    assert engine.seed("u", day, Usage(requests=3, tokens=1_900, spend=7), now_us=now_us) is True
    decision = engine.reserve("u", POLICY, tokens=200, now=LAST_MINUTE - 86_400)
    assert not decision.allowed
    assert decision.state("dr").used == 3


def test_peek_seeds_too(engine):
    ledger = Ledger(d20240131=Usage(requests=2, tokens=700))
    peeked = engine.peek("u", POLICY, now=LAST_MINUTE, seeder=ledger)
    assert peeked.state("dt").used == 700
    assert peeked.state("dr").used == 2


def test_without_rehydrate_missing_windows_start_at_zero(engine):
    policy = Policy(POLICY.limits, time_zone=NY, rehydrate=False)
    ledger = Ledger(d20240131=Usage(tokens=2_000))
    assert engine.reserve("u", policy, tokens=2_000, now=LAST_MINUTE, seeder=ledger).allowed
    assert ledger.calls == []


def test_a_policy_without_windows_never_asks_the_ledger(engine):
    policy = Policy((Limit("rpm", "rr", 10),), track_usage=False)
    ledger = Ledger()
    assert engine.reserve("u", policy, tokens=10, now=LAST_MINUTE, seeder=ledger).allowed
    assert ledger.calls == []
    (state,) = engine.subject_keys("u")
    assert set(engine.client.hkeys(state)) == {b"rr"}  # its rate only: no day, no month


def test_usage_is_tracked_in_windows_no_limit_reads(engine):
    policy = Policy((Limit("rpm", "rr", 10),), time_zone=NY)
    ledger = Ledger(d20240131=Usage(tokens=40))
    engine.reserve("u", policy, tokens=10, now=LAST_MINUTE, seeder=ledger)
    assert ledger.calls == [("u", "d", "20240131"), ("u", "m", "202401")]
    counted = Policy((Limit("tokens per day", "dt", 1_000),), time_zone=NY)
    assert engine.peek("u", counted, now=LAST_MINUTE).state("dt").used == 50


def test_settle_after_a_lost_lease_adds_the_actual_amounts(engine, redis_client):
    granted = engine.reserve("u", POLICY, tokens=1_000, lease=True, now=LAST_MINUTE)
    reservation = granted.reservation
    redis_client.flushdb()
    # The day window was re-seeded from the ledger (which holds no row for this request yet),
    # the month window was not.
    assert engine.seed("u", reservation.day, Usage(requests=3, tokens=700), now_us=granted.now_us)

    assert engine.settle(reservation, tokens=300, spend=0) is False

    ledger = Ledger(m202401=Usage(requests=9, tokens=123))
    peeked = engine.peek("u", POLICY, now=LAST_MINUTE, seeder=ledger)
    assert peeked.state("dt").used == 1_000  # 700 seeded + 300 used
    assert peeked.state("dr").used == 4
    assert peeked.state("mt").used == 123  # left alone by settle, seeded from the ledger
    assert peeked.state("cc").used == 0
    assert ledger.calls == [("u", "m", "202401")]


def test_a_window_seeded_after_it_ended_expires_at_once(engine):
    day, _ = current_windows(int(LAST_MINUTE * 1_000_000), NY)  # long over by the real clock
    assert engine.seed("u", day, Usage(tokens=5))
    time.sleep(0.01)
    assert engine.subject_keys("u") == []
