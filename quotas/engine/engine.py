"""The quota engine: every limit of one subject decided in one Lua call."""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Callable, Generator
from importlib import resources
from typing import Any, Literal, NamedTuple

import redis

from .limits import (
    Decision,
    Level,
    Limit,
    LimitState,
    Policy,
    Reservation,
    Usage,
    Window,
    made,
)
from .windows import current_windows

# Given a subject and a missing window, the totals a durable ledger holds for it.
Seeder = Callable[[str, Window], Usage]

WINDOW_GRACE_US = 86_400 * 1_000_000
HOLD = "hold"  # `Decision.denied_by` while a subject is on hold

DEFAULT_LEASE_SECONDS = 300.0
KEY_CACHE_SIZE = 10_000  # subjects whose keys are kept made


class CountersUnavailable(Exception):
    """Redis could not be reached or did not answer in time."""


class _Unavailable:
    """Redis errors of an outage raised as `CountersUnavailable`; others as they are.

    A class, not a generator context manager: every decision enters one."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is None:
            return
        # redis-py strips the CLUSTERDOWN / MASTERDOWN code from the message: match the
        # classes.
        if isinstance(
            exc,
            (
                redis.ConnectionError,
                redis.TimeoutError,
                redis.exceptions.ClusterError,
                redis.exceptions.RedisClusterException,
            ),
        ):
            raise CountersUnavailable(str(exc)) from exc
        if isinstance(exc, redis.ResponseError) and any(
            code in str(exc) for code in ("LOADING", "CLUSTERDOWN", "MASTERDOWN")
        ):
            raise CountersUnavailable(str(exc)) from exc


_UNAVAILABLE = _Unavailable()


def unavailable_on_error() -> _Unavailable:
    """A context in which the errors of a Redis outage become `CountersUnavailable`."""
    return _UNAVAILABLE


class _Plan(NamedTuple):
    """What the reply needs to become limit states, worked out once per set of limits."""

    # per limit: (limit, period, field, shown limit, emission interval in us or 0.0)
    limits: tuple[tuple[Limit, str, str, int, float], ...]
    uses_day: bool
    uses_month: bool
    rates: tuple[tuple[str, float], ...]  # `Reservation.rates`
    # the limits as the script reads them: n, then code, amount, burst, interval (us) each
    args: tuple[Any, ...]
    names: tuple[str, ...]


def _plan(policy: Policy) -> _Plan:
    """The policy's plan, kept on the policy itself: hashing its limits costs more."""
    plan = policy.__dict__.get("_engine_plan")
    if plan is None:
        plan = policy.__dict__["_engine_plan"] = _make_plan(policy.limits, policy.track_usage)
    return plan


def _make_plan(limits: tuple[Limit, ...], track_usage: bool) -> _Plan:
    rows = tuple(
        (
            limit,
            limit.code[0],
            limit.code[1],
            limit.capacity if limit.is_rate else limit.amount,
            int(limit.interval * 1_000_000) / limit.amount if limit.is_rate else 0.0,
        )
        for limit in limits
    )
    periods = {limit.code[0] for limit in limits}
    rates = tuple((limit.code[1], limit.emission_interval_us) for limit in limits if limit.is_rate)
    args: list[Any] = [len(limits)]
    for limit in limits:
        args += [limit.code, limit.amount, limit.capacity, int(limit.interval * 1_000_000)]
    uses_day, uses_month = track_usage or "d" in periods, track_usage or "m" in periods
    names = tuple(limit.name for limit in limits)
    return _Plan(rows, uses_day, uses_month, rates, tuple(args), names)


_TOTAL = {"r": 0, "t": 1, "s": 2}
REPLY_HEAD = 4  # status, denied, retry after, now: then 10 values per subject
WINDOW_ARGS = slice(9, 13)  # reserve.lua's ARGV[10..13]: the day's and the month's bounds


def _states(
    plan: _Plan,
    reply: list[int],
    at: int,
    asks: dict[str, int],
    leased: bool,
    charged: bool,
    day_end: int,
    month_end: int,
) -> list[LimitState]:
    """Each limit's state from what reserve.lua read of the subject whose values start at
    `reply[at]`, after the ask if it was charged.

    The script decides; this only reports, with the script's arithmetic (GCRA in doubles).
    """
    now = reply[3]
    states = []
    for limit, period, field, shown, interval in plan.limits:
        if period == "r":
            tat = reply[at + 6] if field == "r" else reply[at + 7]
            if tat < now:
                tat = now
            avail = min(shown, math.floor((now - (tat - interval * shown)) / interval))
            used, remaining, reset = shown - avail, avail, tat - now
            if charged:
                cost = asks[field]
                new_tat = math.floor(tat + interval * cost)
                used += cost
                remaining = math.floor((now - (new_tat - interval * shown)) / interval)
                reset = new_tat - now
        elif period == "c":
            used = reply[at + 8] + leased
            remaining, reset = shown - used, reply[at + 9]
        else:
            used = reply[at + (0 if period == "d" else 3) + _TOTAL[field]]
            if charged:
                used += asks[field]
            remaining = shown - used
            reset = (day_end if period == "d" else month_end) - now
        states.append(
            LimitState(
                limit.name,
                limit.code,
                shown,
                used,
                remaining if remaining > 0 else 0,
                (math.ceil(reset) if reset > 0 else 0) / 1_000_000,
            )
        )
    return states


def window_fields(window: Window) -> tuple[str, str, str]:
    """The state hash's fields for a window's requests, tokens and spend (see reserve.lua)."""
    return (f"{window.kind}r", f"{window.kind}t", f"{window.kind}s")


def window_counters(state: dict[Any, Any], window: Window) -> Usage | None:
    """A window's counters in a state hash as HGETALL reads it; None unless it holds them."""
    fields = {k.decode() if isinstance(k, bytes) else k: v for k, v in state.items()}
    label = fields.get(f"{window.kind}l")
    if label is None or int(label) != window.start_us:
        return None
    return Usage(*(int(fields.get(name, 0)) for name in window_fields(window)))


def _lua(name: str) -> str:
    return resources.files("quotas.engine").joinpath("lua", name).read_text()


def _decision(
    policy: Policy,
    plan: Any,
    subject: str,
    mode: str,
    member: str,
    requests: int,
    tokens: int,
    spend: int,
    values: list[int],
    held_ms: int | None,
    day: Window,
    month: Window,
    levels: tuple[Level, ...] = (),
) -> Decision:
    """The decision reserve.lua's reply stands for (the first subject's, with its levels').

    Built with `made`: a decision is made on every protected call."""
    status, denied, retry_us, now_us = values[0], values[1], values[2], values[3]
    charged = status == 1 and mode == "charge"
    asks = {"r": requests, "t": tokens, "s": spend, "c": 1 if member else 0}
    leased = charged and bool(member)
    read = (plan, values, asks, leased, charged, day.end_us, month.end_us, levels)
    r, t, sp = (requests, tokens, spend) if charged else (0, 0, 0)
    day_usage = _usage(values[4], values[5], values[6], plan.uses_day, r, t, sp)
    month_usage = _usage(values[7], values[8], values[9], plan.uses_month, r, t, sp)
    reservation = None
    allowed = status == 1
    if charged:
        reservation = made(
            Reservation,
            {
                "id": member.split(":", 1)[0] if member else "",
                "subject": subject,
                "requests": requests,
                "tokens": tokens,
                "spend": spend,
                "day": day,
                "month": month,
                "rates": plan.rates,
                "member": member,
                "levels": tuple((level.subject, _plan(level.policy).rates) for level in levels)
                if levels
                else (),
            },
        )
    denied_by = None
    reasons: tuple[str, ...] = ()
    if not allowed:
        names = list(plan.names)
        for level in levels:
            names += [f"{level.name}.{limit.name}" for limit in level.policy.limits]
        denied_by = names[denied - 1] if denied else None
        states = _decision_states(*read)
        reasons = tuple(
            s.name for s in states if s.remaining < asks[s.code[1] if s.code != "cc" else "c"]
        )
        if status == 0 and not denied:  # on hold
            denied_by, reasons = HOLD, (HOLD, *reasons)
    return made(
        Decision,
        {
            "allowed": allowed,
            "denied_by": denied_by,
            "retry_after": retry_us / 1_000_000,
            "now_us": now_us,
            # Worked out when first read; a refusal needed them already.
            **({"_states": states} if not allowed else {"_states_from": (_decision_states, read)}),
            "reservation": reservation,
            "day": day,
            "month": month,
            "reasons": reasons,
            "day_usage": day_usage,
            "month_usage": month_usage,
            "watched_hold": None if held_ms is None else max(held_ms, 0) / 1000,
            "level_subjects": {level.name: level.subject for level in levels} if levels else {},
        },
    )


def _decision_states(
    plan: _Plan,
    values: list[int],
    asks: dict[str, int],
    leased: bool,
    charged: bool,
    day_end: int,
    month_end: int,
    levels: tuple[Level, ...],
) -> tuple[LimitState, ...]:
    """Every limit's state in a reply: the first subject's, then each level's, named
    `level.limit`."""
    states = _states(plan, values, REPLY_HEAD, asks, leased, charged, day_end, month_end)
    for j, level in enumerate(levels, start=1):
        at = REPLY_HEAD + 10 * j
        for state in _states(
            _plan(level.policy), values, at, asks, leased, charged, day_end, month_end
        ):
            states.append(state._replace(name=f"{level.name}.{state.name}"))
    return tuple(states)


def _usage(
    requests: int, tokens: int, spend: int, counted: bool, plus_r: int, plus_t: int, plus_s: int
) -> Usage:
    """A window's counters as read, with the ask if it was charged to a window in use."""
    if counted:
        requests, tokens, spend = requests + plus_r, tokens + plus_t, spend + plus_s
    return made(Usage, {"requests": requests, "tokens": tokens, "spend": spend})


# What a decision asks of Redis: reserve.lua's keys and arguments, or seeding a window.
ReserveStep = tuple[Literal["reserve"], list[str], list[Any]]
SeedStep = tuple[Literal["seed"], str, Window, int]  # subject, window, now


class EngineLayout:
    """The keys, script arguments and reply reading that the sync and asyncio engines share.

    A decision is a generator of steps (run reserve.lua; seed a missing window) that the
    engine carries out with its own client and sends the replies back into.
    """

    prefix: str

    def key(self, subject: str, suffix: str) -> str:
        """A subject's key. Its hash tag is the subject, or for "tag/name" (a team's member,
        a user's key) the part before the slash: decided together, in one cluster slot."""
        tag, slash, name = subject.partition("/")
        if slash:
            return f"{self.prefix}:{{{tag}}}/{name}:{suffix}"
        return f"{self.prefix}:{{{subject}}}:{suffix}"

    def state_key(self, subject: str) -> str:
        """The hash holding the subject's arrival times and its day's and month's counters."""
        return self.key(subject, "state")

    def _keys(self, subjects: tuple[str, ...]) -> list[str]:
        """reserve.lua's keys for these subjects, made once and kept."""
        cache = self.__dict__.setdefault("_key_cache", {})
        found = cache.get(subjects)
        if found is None:
            found = []
            for each in subjects:
                found += [self.state_key(each), self.key(each, "lease")]
            if len(cache) >= KEY_CACHE_SIZE:
                cache.clear()
            cache[subjects] = found
        return found  # type: ignore[no-any-return]

    def _windows(self, clock_us: int, time_zone: str) -> tuple[Window, Window]:
        """The day and month around `clock_us`, worked out again only when it leaves them."""
        cache = self.__dict__.setdefault("_window_cache", {})
        found = cache.get(time_zone)
        if found is not None:
            day, month = found
            if day.start_us <= clock_us < day.end_us and month.start_us <= clock_us < month.end_us:
                return found  # type: ignore[no-any-return]
        windows = cache[time_zone] = current_windows(clock_us, time_zone)
        return windows

    def _member(self, lease: bool, requests: int, tokens: int, spend: int) -> str:
        if min(requests, tokens, spend) < 0:
            raise ValueError("A reservation cannot ask for negative amounts.")
        return f"{secrets.token_hex(6)}:{requests}:{tokens}:{spend}" if lease else ""

    def _settle_call(
        self, r: Reservation, tokens: int, spend: int, requests: int | None
    ) -> tuple[list[str], list[Any]]:
        used_requests = r.requests if requests is None else requests
        keys: list[str] = []
        args: list[Any] = [r.member, r.requests, r.tokens, r.spend, used_requests, tokens, spend]
        args += [r.day.start_us, r.month.start_us]
        for subject, rates in ((r.subject, r.rates), *r.levels):
            keys += [self.state_key(subject), self.key(subject, "lease")]
            args.append(len(rates))
            for field, interval in rates:
                args += [field, interval]
        return keys, args

    def _seed_call(
        self, subject: str, window: Window, usage: Usage, now_us: int | None
    ) -> tuple[list[str], list[Any]]:
        if now_us is None:
            now_us = int(time.time() * 1_000_000)
        expire_ms = max(1, (window.end_us + WINDOW_GRACE_US - now_us) // 1000)
        args = [window.kind, window.start_us, usage.requests, usage.tokens, usage.spend, expire_ms]
        return [self.state_key(subject)], args

    def _first(
        self,
        subject: str,
        policy: Policy,
        mode: str,
        member: str,
        requests: int,
        tokens: int,
        spend: int,
        lease_seconds: float,
        now: float | None,
        levels: tuple[Level, ...] = (),
    ) -> _Ask:
        """A decision's ask: what reserve.lua is called with first.

        The `levels` are decided in the same script call, all or nothing: their keys must
        share the first subject's hash tag (see `key`)."""
        clock_us = int((time.time() if now is None else now) * 1_000_000)
        day, month = self._windows(clock_us, policy.time_zone)
        plan = _plan(policy)
        if levels:
            subjects = (subject, *(level.subject for level in levels))
            tail: list[Any] = [WINDOW_GRACE_US, *plan.args]
            for level in levels:
                tail += _plan(level.policy).args
        else:
            subjects, tail = (subject,), [WINDOW_GRACE_US, *plan.args]
        head = [
            "" if now is None else clock_us,
            requests,
            tokens,
            spend,
            member,
            int(lease_seconds * 1_000_000),
            mode,
            int(policy.track_usage),
            int(policy.rehydrate),
        ]
        args = [*head, day.start_us, day.end_us, month.start_us, month.end_us, *tail]
        return _Ask(
            policy,
            plan,
            subject,
            subjects,
            mode,
            member,
            levels,
            self._keys(subjects),
            args,
            day,
            month,
        )

    def _steps(
        self, ask: _Ask, reply: tuple[list[int], int | None]
    ) -> Generator[ReserveStep | SeedStep, Any, Decision]:
        """The rest of a decision after reserve.lua's first `reply`: yields ("seed",
        subject, window, now_us) for each window missing from Redis, and ("reserve", keys,
        args) to receive (reply, held_ms) again; returns the decision."""
        day, month = ask.day, ask.month
        for _attempt in range(4):
            values, held_ms = reply
            status, now_us = values[0], values[3]
            if status >= 0:
                return ask.decision(values, held_ms, day, month)
            if status == -2:  # this server's clock is off: take the windows by Redis's
                day, month = current_windows(now_us, ask.policy.time_zone)
            else:
                for j, each in enumerate(ask.subjects):
                    for missing, window in ((values[4 + 2 * j], day), (values[5 + 2 * j], month)):
                        if missing:
                            yield ("seed", each, window, now_us)
            args = list(ask.args)
            args[WINDOW_ARGS] = (day.start_us, day.end_us, month.start_us, month.end_us)
            reply = yield ("reserve", ask.keys, args)
        # A window seeded over and over vanished each time.
        raise RuntimeError(f"Window counters for {ask.subject!r} could not be seeded.")


class _Ask(NamedTuple):
    """A decision being made: its first call's keys and arguments, and what its reply is
    read with."""

    policy: Policy
    plan: _Plan
    subject: str
    subjects: tuple[str, ...]
    mode: str
    member: str
    levels: tuple[Level, ...]
    keys: list[str]
    args: list[Any]
    day: Window
    month: Window

    def decision(
        self, values: list[int], held_ms: int | None, day: Window, month: Window
    ) -> Decision:
        requests, tokens, spend = self.args[1:4]  # reserve.lua's ARGV[2..4]
        return _decision(
            self.policy,
            self.plan,
            self.subject,
            self.mode,
            self.member,
            requests,
            tokens,
            spend,
            values,
            held_ms,
            day,
            month,
            self.levels,
        )


class QuotaEngine(EngineLayout):
    """Reserve, settle and refund against Redis counters.

    `client` is a `redis.Redis` or `redis.cluster.RedisCluster`; every key of one subject
    carries the subject as its hash tag, so each script touches one cluster slot.
    """

    def __init__(self, client: Any, prefix: str = "quotas") -> None:
        self.client = client
        self.prefix = prefix
        self._reserve = client.register_script(_lua("reserve.lua"))
        self._settle = client.register_script(_lua("settle.lua"))
        self._seed = client.register_script(_lua("seed.lua"))
        self._hold = client.register_script(_lua("hold.lua"))

    def subject_keys(self, subject: str) -> list[str]:
        """Every key this subject holds now (for inspection and memory accounting)."""
        return [k.decode() if isinstance(k, bytes) else k for k in self._scan(subject)]

    def _scan(self, subject: str) -> list[Any]:
        pattern = self.key(subject, "*").replace("{", "\\{").replace("}", "\\}")
        return list(self.client.scan_iter(match=pattern, count=1000))

    # policy version -------------------------------------------------------------------

    def policy_version(self) -> int:
        """A number every process can compare to notice that limits changed."""
        with unavailable_on_error():
            return int(self.client.get(f"{self.prefix}:policy-version") or 0)

    def bump_policy_version(self) -> int:
        with unavailable_on_error():
            return int(self.client.incr(f"{self.prefix}:policy-version"))

    # decisions ------------------------------------------------------------------------

    def reserve(
        self,
        subject: str,
        policy: Policy,
        *,
        requests: int = 1,
        tokens: int = 0,
        spend: int = 0,
        lease: bool = False,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        now: float | None = None,
        seeder: Seeder | None = None,
        watch: tuple[str, ...] = (),
        levels: tuple[Level, ...] = (),
    ) -> Decision:
        """Charge `requests`, `tokens` and `spend` (micro-USD) against every limit, or nothing.

        The `levels` (a team, a key) are checked and charged with the subject, all or
        nothing, in the same script call.

        With `lease`, the reservation holds a concurrency slot until settled or refunded,
        or until `lease_seconds` pass. `now` (seconds) replaces Redis's clock, for tests.
        The holds on the `watch` subjects are read with it: `Decision.watched_hold` is the
        longest, in seconds (None if they could not be read; the reservation stands).
        """
        member = self._member(lease, requests, tokens, spend)
        return self._run(
            subject,
            policy,
            "charge",
            member,
            requests,
            tokens,
            spend,
            lease_seconds,
            now,
            seeder,
            tuple(self.key(other, "hold") for other in watch) if watch else (),
            levels,
        )

    def peek(
        self,
        subject: str,
        policy: Policy,
        *,
        now: float | None = None,
        seeder: Seeder | None = None,
        levels: tuple[Level, ...] = (),
    ) -> Decision:
        """Every limit's state (the levels' too) without charging anything."""
        return self._run(subject, policy, "peek", "", 0, 0, 0, 0, now, seeder, (), levels)

    def _run(
        self,
        subject: str,
        policy: Policy,
        mode: str,
        member: str,
        requests: int,
        tokens: int,
        spend: int,
        lease_seconds: float,
        now: float | None,
        seeder: Seeder | None,
        watched: tuple[str, ...],
        levels: tuple[Level, ...] = (),
    ) -> Decision:
        ask = self._first(
            subject, policy, mode, member, requests, tokens, spend, lease_seconds, now, levels
        )
        with unavailable_on_error():
            reply: Any = self._call_reserve(ask.keys, ask.args, watched)
        if reply[0][0] >= 0:  # decided: nothing to seed
            return ask.decision(reply[0], reply[1], ask.day, ask.month)
        steps = self._steps(ask, reply)
        reply = None
        while True:
            try:
                step = steps.send(reply)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
            if step[0] == "reserve":
                with unavailable_on_error():
                    reply = self._call_reserve(step[1], step[2], watched)
            else:
                _, each, window, now_us = step
                usage = seeder(each, window) if seeder else Usage()
                self.seed(each, window, usage, now_us=now_us)
                reply = None

    def _call_reserve(
        self, keys: list[str], args: list[Any], watched: tuple[str, ...]
    ) -> tuple[list[int], int | None]:
        """reserve.lua's reply and the longest PTTL (ms) of the `watched` keys, or None if
        those could not be read.

        On one server both go in one round trip. On a cluster the watched keys live on
        other nodes, which may fail after the reservation was charged: they are read in a
        second call, after it.
        """
        if not watched:
            return self._reserve(keys=keys, args=args), 0
        if isinstance(self.client, redis.cluster.RedisCluster):
            return self._reserve(keys=keys, args=args), self._holds(watched)
        script = self._reserve
        for _attempt in range(2):
            pipe = self.client.pipeline(transaction=False)
            pipe.evalsha(script.sha, len(keys), *keys, *args)
            for key in watched:
                pipe.pttl(key)
            reply, *ttls = pipe.execute(raise_on_error=False)
            if isinstance(reply, redis.exceptions.NoScriptError):
                script.sha = self.client.script_load(script.script)  # it did not run
                continue
            if isinstance(reply, Exception):
                raise reply
            if any(isinstance(ttl, Exception) for ttl in ttls):
                return reply, None
            return reply, max(ttls)
        raise redis.exceptions.NoScriptError("reserve.lua could not be loaded")

    def _holds(self, watched: tuple[str, ...]) -> int | None:
        try:
            return max(int(self.client.pttl(key)) for key in watched)
        except redis.RedisError:
            return None

    def seed(self, subject: str, window: Window, usage: Usage, now_us: int | None = None) -> bool:
        """Create a window's counters from ledger totals unless they exist."""
        keys, args = self._seed_call(subject, window, usage, now_us)
        with unavailable_on_error():
            return bool(self._seed(keys=keys, args=args))

    def hold(self, subject: str, seconds: float) -> None:
        """Refuse every reservation of `subject` for `seconds` (extends, never shortens)."""
        ms = max(1, int(seconds * 1000))
        with unavailable_on_error():
            self._hold(keys=[self.key(subject, "hold"), self.state_key(subject)], args=[ms])

    def hold_remaining(self, subject: str) -> float:
        """Seconds left of a hold on `subject`; 0 if none."""
        with unavailable_on_error():
            ms = int(self.client.pttl(self.key(subject, "hold")))
        return max(ms, 0) / 1000

    # settlement -----------------------------------------------------------------------

    def settle(
        self,
        reservation: Reservation,
        *,
        tokens: int,
        spend: int,
        requests: int | None = None,
    ) -> bool:
        """Move the counters from the reserved amounts to the used ones; free the lease.

        Returns False if the reservation had been lost from Redis (then the used amounts
        are added to whatever counters exist).
        """
        keys, args = self._settle_call(reservation, tokens, spend, requests)
        with unavailable_on_error():
            return bool(self._settle(keys=keys, args=args))

    def refund(self, reservation: Reservation) -> bool:
        """Give back everything a reservation took: request, tokens, spend and lease."""
        return self.settle(reservation, tokens=0, spend=0, requests=0)
