"""Noticing that another client flushed the bench database in the middle of a measurement.

On a shared development Redis, any `FLUSHALL` (a test suite, say) wipes the bench's keys;
a measurement that lived through one is thrown away and taken again.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
KEY = "bench:guard"
ATTEMPTS = 5


class Flushed(RuntimeError):
    """The bench database was flushed by someone else during every attempt."""


class Guard:
    def __init__(self, client: Any) -> None:
        self.client = client
        self.token = ""

    def arm(self) -> None:
        self.token = uuid.uuid4().hex
        self.client.set(KEY, self.token)

    def intact(self) -> bool:
        stored = self.client.get(KEY)
        return stored is not None and stored.decode() == self.token


def guarded(
    client: Any,
    measure: Callable[[], T],
    what: str,
    log: Callable[[str], None] = print,
    attempts: int = ATTEMPTS,
) -> T:
    """`measure()`, taken again if the database was flushed while it ran."""
    guard = Guard(client)
    for _ in range(attempts):
        guard.arm()
        result = measure()
        if guard.intact():
            return result
        log(f"  another client flushed the bench database during {what}; measuring again")
    raise Flushed(f"The bench database was flushed during every attempt at {what}.")
