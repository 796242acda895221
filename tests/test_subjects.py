"""Subject names: a team's members and a user's keys share one hash tag."""

from __future__ import annotations

from quotas.engine import QuotaEngine
from quotas.subjects import key_subject, ledger_level, team_subject, user_subject


def test_a_user_alone_and_in_a_team():
    assert user_subject(42) == "u:42"
    assert user_subject(42, 5) == "t:5/u:42"
    assert team_subject(5) == "t:5"


def test_a_key_lives_under_its_owners_tag():
    assert key_subject("u:42", "ab.cd") == "u:42/k:ab.cd"
    assert key_subject("t:5/u:42", "ab.cd") == "t:5/k:ab.cd"


def test_the_ledger_knows_each_level_by_its_last_name():
    assert [ledger_level(s) for s in ("u:42", "t:5/u:42", "t:5", "t:5/k:ab")] == [
        "u:42",
        "u:42",
        "t:5",
        "k:ab",
    ]


def test_every_level_of_one_call_lands_in_one_cluster_slot():
    from redis.crc import key_slot

    engine = QuotaEngine.__new__(QuotaEngine)
    engine.prefix = "quotas"
    member = user_subject(42, 5)
    keys = [
        engine.key(member, "lease"),
        engine.key(team_subject(5), "day:20261202"),
        engine.key(key_subject(member, "ab"), "rate"),
    ]
    assert len({key_slot(key.encode()) for key in keys}) == 1
    assert key_slot(engine.key(user_subject(42), "lease").encode()) != key_slot(keys[0].encode())
