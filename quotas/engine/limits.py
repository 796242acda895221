"""Plain values the engine takes and returns: no Django, no Redis."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar

# A limit's code: its period ("r" rate, "d" day, "m" month, "c" concurrency) then the
# resource it counts ("r" requests, "t" tokens, "s" spend in micro-USD).
RATE_REQUESTS = "rr"
RATE_TOKENS = "rt"
DAY_REQUESTS = "dr"
DAY_TOKENS = "dt"
DAY_SPEND = "ds"
MONTH_REQUESTS = "mr"
MONTH_TOKENS = "mt"
MONTH_SPEND = "ms"
CONCURRENCY = "cc"

CODES = frozenset(
    {
        RATE_REQUESTS,
        RATE_TOKENS,
        DAY_REQUESTS,
        DAY_TOKENS,
        DAY_SPEND,
        MONTH_REQUESTS,
        MONTH_TOKENS,
        MONTH_SPEND,
        CONCURRENCY,
    }
)


@dataclass(frozen=True)
class Limit:
    """One limit: `amount` per window, per `interval` seconds for a rate, or in flight."""

    name: str
    code: str
    amount: int
    burst: int | None = None
    interval: float = 60.0

    def __post_init__(self) -> None:
        if self.code not in CODES:
            raise ValueError(f"Unknown limit code {self.code!r}; expected one of {sorted(CODES)}.")
        if self.amount < 0:
            raise ValueError(f"Limit {self.name!r} must not be negative (got {self.amount}).")
        if self.is_rate:
            if self.amount == 0:
                raise ValueError(f"Rate limit {self.name!r} needs an amount of at least 1.")
            if self.burst is not None and self.burst < 1:
                raise ValueError(f"Rate limit {self.name!r} needs a burst of at least 1.")
            if self.interval <= 0:
                raise ValueError(f"Rate limit {self.name!r} needs a positive interval.")

    @property
    def is_rate(self) -> bool:
        return self.code[0] == "r"

    @property
    def capacity(self) -> int:
        """For a rate: how many may pass at once (the bucket size)."""
        return self.burst if self.burst is not None else self.amount

    @property
    def emission_interval_us(self) -> float:
        """For a rate: microseconds for one unit to refill."""
        return self.interval * 1_000_000 / self.amount


@dataclass(frozen=True)
class Policy:
    """Every limit of one subject, checked together in one step."""

    limits: tuple[Limit, ...] = ()
    time_zone: str = "UTC"
    # Keep day and month usage counters even where no limit reads them (for usage reports).
    track_usage: bool = True
    # A day or month counter missing from Redis must be re-seeded (from a ledger) first.
    rehydrate: bool = True

    def __post_init__(self) -> None:
        codes = [limit.code for limit in self.limits]
        duplicates = {code for code in codes if codes.count(code) > 1}
        if duplicates:
            raise ValueError(f"A policy takes one limit per code; repeated: {sorted(duplicates)}.")

    def limit(self, code: str) -> Limit | None:
        for limit in self.limits:
            if limit.code == code:
                return limit
        return None

    @property
    def uses_windows(self) -> bool:
        return self.track_usage or any(limit.code[0] in "dm" for limit in self.limits)


@dataclass(frozen=True)
class Usage:
    """Amounts counted in one window (spend in micro-USD)."""

    requests: int = 0
    tokens: int = 0
    spend: int = 0


@dataclass(frozen=True)
class Window:
    """One calendar window in the policy's time zone; bounds in microseconds since the epoch."""

    kind: str  # "d" or "m"
    label: str  # "20261128" or "202611"
    start_us: int
    end_us: int


class LimitState(NamedTuple):
    """Where one limit stands after a decision."""

    name: str
    code: str
    limit: int
    used: int
    remaining: int
    reset_after: float  # seconds until the window ends or the bucket is full again


class Level(NamedTuple):
    """Another subject decided with the first, all or nothing (a user's team, their key).

    Its limit states are named `name.limit` ("team.tokens_per_day")."""

    name: str
    subject: str
    policy: Policy


@dataclass(frozen=True)
class Reservation:
    """What a granted reservation holds, to settle or refund later."""

    id: str
    subject: str
    requests: int
    tokens: int
    spend: int
    day: Window
    month: Window
    rates: tuple[tuple[str, float], ...] = ()  # (resource field, emission interval in us)
    member: str = ""  # its entry in the subject's lease set; "" if it took none
    # The other subjects charged in the same decision (a team, a key), with their rates.
    levels: tuple[tuple[str, tuple[tuple[str, float], ...]], ...] = ()


class _States:
    """`Decision.states`: as given, or worked out from the engine's reply when first read
    (a decision is made on every protected call; its states only when asked for)."""

    def __get__(self, obj: Any, owner: Any = None) -> tuple[LimitState, ...]:
        if obj is None:
            return ()  # the field's default
        found: dict[str, Any] = obj.__dict__
        states = found.get("_states")
        if states is None:  # two threads reading at once both work them out, alike
            work, args = found["_states_from"]
            states = found["_states"] = tuple(work(*args))
        return states

    def __set__(self, obj: Any, value: tuple[LimitState, ...]) -> None:
        obj.__dict__["_states"] = tuple(value)


@dataclass(frozen=True)
class Decision:
    """The answer of one reservation: granted or not, why, and every limit's state."""

    allowed: bool
    denied_by: str | None
    retry_after: float  # seconds; 0 when allowed
    now_us: int
    states: _States = _States()
    reservation: Reservation | None = None
    day: Window | None = None
    month: Window | None = None
    reasons: tuple[str, ...] = ()  # every limit that could not take the ask
    day_usage: Usage = Usage()  # the day's and month's counters, this ask included if granted
    month_usage: Usage = Usage()
    # Seconds left of the longest hold on a watched subject; None: they could not be read.
    watched_hold: float | None = 0.0
    # The subjects of the levels decided with the first, by level name ("team": "t:5").
    level_subjects: dict[str, str] = field(default_factory=dict)

    def state(self, code: str) -> LimitState | None:
        for state in self.states:
            if state.code == code:
                return state
        return None


T = TypeVar("T")


def made(cls: type[T], values: dict[str, Any]) -> T:
    """An instance of the frozen dataclass `cls` (one of this module's, none of which checks
    its values) from the value of every one of its fields, without the per-field
    `object.__setattr__` its `__init__` pays: the engine makes a few on every decision.

    A `Decision`'s states are given as `_states` (the tuple) or `_states_from` (a function
    and its arguments, called when they are first read)."""
    instance = object.__new__(cls)
    instance.__dict__.update(values)
    return instance
