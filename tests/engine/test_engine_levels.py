"""A subject decided with its levels (a team, a key): every limit of each, all or nothing."""

from __future__ import annotations

import threading

import pytest

from quotas.engine import Level, Limit, Policy, Usage, Window

MEMBER = Policy((Limit("tokens_per_day", "dt", 1_000), Limit("in_flight", "cc", 2)))
TEAM = Policy((Limit("tokens_per_day", "dt", 1_500),))
KEY = Policy((Limit("requests_per_day", "dr", 3),))


def levels(team: Policy = TEAM) -> tuple[Level, ...]:
    return (Level("team", "t:1", team),)


def test_both_are_charged_and_reported(engine):
    granted = engine.reserve("t:1/u:1", MEMBER, tokens=400, lease=True, levels=levels())

    assert granted.allowed
    assert granted.state("dt").used == 400
    used = {s.name: s.used for s in granted.states}
    assert used == {"tokens_per_day": 400, "in_flight": 1, "team.tokens_per_day": 400}
    assert engine.peek("t:1", TEAM).state("dt").used == 400


def test_the_team_refuses_and_neither_is_charged(engine):
    assert engine.reserve("t:1/u:2", MEMBER, tokens=900, levels=levels()).allowed

    denied = engine.reserve("t:1/u:1", MEMBER, tokens=700, lease=True, levels=levels())

    assert (denied.allowed, denied.denied_by) == (False, "team.tokens_per_day")
    assert denied.reservation is None
    assert engine.peek("t:1/u:1", MEMBER).state("dt").used == 0
    assert engine.peek("t:1/u:1", MEMBER).state("cc").used == 0
    assert engine.peek("t:1", TEAM).state("dt").used == 900


def test_the_members_own_lower_limit_still_binds(engine):
    denied = engine.reserve("t:1/u:1", MEMBER, tokens=1_100, levels=levels())

    assert denied.denied_by == "tokens_per_day"
    assert engine.peek("t:1", TEAM).state("dt").used == 0


def test_three_levels_in_one_decision(engine):
    three = (*levels(), Level("key", "t:1/k:abc", KEY))
    for _ in range(3):
        assert engine.reserve("t:1/u:1", MEMBER, tokens=10, levels=three).allowed

    denied = engine.reserve("t:1/u:1", MEMBER, tokens=10, levels=three)

    assert denied.denied_by == "key.requests_per_day"
    assert engine.peek("t:1", TEAM).state("dt").used == 30


def test_settle_and_refund_move_every_level(engine):
    granted = engine.reserve("t:1/u:1", MEMBER, tokens=600, lease=True, levels=levels())
    assert engine.settle(granted.reservation, tokens=250, spend=0)
    refunded = engine.reserve("t:1/u:1", MEMBER, tokens=300, lease=True, levels=levels())
    assert engine.refund(refunded.reservation)

    member = engine.peek("t:1/u:1", MEMBER)
    assert (member.state("dt").used, member.state("cc").used) == (250, 0)
    assert engine.peek("t:1", TEAM).state("dt").used == 250


def test_missing_windows_of_every_level_are_seeded(engine):
    seeded: list[tuple[str, str]] = []

    def ledger(subject: str, window: Window) -> Usage:
        seeded.append((subject, window.kind))
        return Usage(tokens=1_400) if subject == "t:1" and window.kind == "d" else Usage()

    denied = engine.reserve("t:1/u:1", MEMBER, tokens=200, seeder=ledger, levels=levels())

    assert denied.denied_by == "team.tokens_per_day"
    assert sorted(seeded) == [("t:1", "d"), ("t:1", "m"), ("t:1/u:1", "d"), ("t:1/u:1", "m")]


def test_a_member_and_their_team_share_one_hash_tag(engine):
    assert engine.key("t:1/u:1", "lease").startswith(f"{engine.prefix}:{{t:1}}/u:1:")
    assert engine.key("t:1", "lease") == f"{engine.prefix}:{{t:1}}:lease"
    assert engine.key("u:1", "lease") == f"{engine.prefix}:{{u:1}}:lease"


@pytest.mark.parametrize("members", [2])
def test_concurrent_members_never_overspend_the_team(engine, members):
    spent: list[int] = []
    lock = threading.Lock()

    def member(i: int) -> None:
        for _ in range(30):
            decision = engine.reserve(f"t:1/u:{i}", MEMBER, tokens=70, levels=levels())
            if decision.allowed:
                with lock:
                    spent.append(70)

    threads = [threading.Thread(target=member, args=(i,)) for i in range(members)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sum(spent) == 1_470  # 21 of 70 fit in the team's 1,500; each member under 1,000
    assert engine.peek("t:1", TEAM).state("dt").used == 1_470
