"""Whose counters a decision charges: the names of subjects in Redis keys.

A team's members and a user's keys are named under the team's or the user's hash tag
("t:5/u:42", "u:42/k:abc"), so one script decides them together on a Redis Cluster.
"""

from __future__ import annotations

ORG_SUBJECT = "org"


def user_subject(user_id: int, team_id: int | None = None) -> str:
    user = f"u:{user_id}"
    return user if team_id is None else f"{team_subject(team_id)}/{user}"


def team_subject(team_id: int) -> str:
    return f"t:{team_id}"


def key_subject(owner: str, key_id: str) -> str:
    """A key's subject, under its owner's hash tag (their team's, if they have one)."""
    return f"{owner.partition('/')[0]}/k:{key_id}"


def ledger_level(subject: str) -> str:
    """The name a subject goes by in the ledger: "u:42", "t:5", "k:abc" or "org"."""
    return subject.rpartition("/")[2]
