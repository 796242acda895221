"""Decision cost: microseconds per decision for every limiter at every limit size, and PING."""

from __future__ import annotations

import gc
import math
import time
import uuid
from collections.abc import Callable
from functools import partial
from typing import Any

from quotas.engine import connect

from . import SIZES, throttles
from .guard import ATTEMPTS, Flushed, Guard
from .limiters import NAMES, OURS_TIER, make
from .ours import OursTier

PING = "redis-py PING"
SCRIPT_FLOOR = "EVALSHA, a full tier's keys and arguments, no work"
TIER_RESERVE = "ours: full tier, reserve"
TIER_SETTLED = "ours: full tier, reserve + settle"
MINIMAL_FLOOR = "floor: one script, rate + burst + day count, 1 key"
SERIES = (
    PING,
    MINIMAL_FLOOR,
    SCRIPT_FLOOR,
    *(n for n in NAMES if n != OURS_TIER),
    TIER_RESERVE,
    TIER_SETTLED,
    *throttles.NAMES,
)

# The least a one-script decision can do: TIME, one HMGET, GCRA, one HSET, one PEXPIRE.
# ARGV: emission interval (us), burst, requests per day.
MINIMAL = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local v = redis.call('HMGET', KEYS[1], 'tat', 'n')
local T, burst, day = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local tat, n = tonumber(v[1] or '0'), tonumber(v[2] or '0')
if tat < now then tat = now end
local new_tat = tat + T
if new_tat - T * burst > now or n + 1 > day then return {0, now} end
redis.call('HSET', KEYS[1], 'tat', new_tat, 'n', n + 1)
redis.call('PEXPIRE', KEYS[1], 86400000)
return {1, now}
"""

# Returns what reserve.lua returns for a grant, having read and written nothing.
NO_WORK = "return {1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}"


def percentile(ordered: list[float], q: float) -> float:
    """The nearest-rank percentile of sorted values."""
    if not ordered:
        return math.nan
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def summary(times_ns: list[int], outcomes: list[bool]) -> dict[str, Any]:
    us = sorted(t / 1000 for t in times_ns)
    admitted = sorted(t / 1000 for t, ok in zip(times_ns, outcomes, strict=True) if ok)
    denied = sorted(t / 1000 for t, ok in zip(times_ns, outcomes, strict=True) if not ok)
    return {
        "n": len(us),
        "admitted": len(admitted),
        "denied": len(denied),
        "median_us": percentile(us, 50),
        "p99_us": percentile(us, 99),
        "mean_us": sum(us) / len(us) if us else math.nan,
        "median_admitted_us": percentile(admitted, 50),
        "median_denied_us": percentile(denied, 50),
    }


Probe = Callable[[], tuple[bool, tuple[int, ...]]]


def _hit_probe(call: Callable[[], Any]) -> Probe:
    clock = time.perf_counter_ns

    def probe() -> tuple[bool, tuple[int, ...]]:
        start = clock()
        ok = call()
        return bool(ok), (clock() - start,)

    return probe


def _floor_probe(client: Any, limiter: OursTier, user: int) -> Probe:
    """One script call with the keys and arguments of the full tier's reservation.

    The floor of any decision made in one Lua call: the round trip, the arguments both
    ways and the script's start, without reading or writing anything.
    """
    sent: dict[str, Any] = {}
    real = limiter.engine._reserve
    no_work = client.register_script(NO_WORK)

    def capture(keys: list[Any], args: list[Any]) -> Any:
        sent.update(keys=keys, args=args)
        return no_work(keys=keys, args=args)

    limiter.engine._reserve = capture
    try:
        limiter.reserve(user)
    finally:
        limiter.engine._reserve = real
    return _hit_probe(partial(no_work, keys=sent["keys"], args=sent["args"]))


def _minimal_probe(client: Any, size: int, namespace: str, user: int) -> Probe:
    script = client.register_script(MINIMAL)
    keys, args = [f"{namespace}:{{u:{user}}}:floor"], [60_000_000 / size, size, size]
    return _hit_probe(partial(script, keys=keys, args=args))


def _reserve_probe(limiter: OursTier, user: int) -> Probe:
    """Times the reservation alone; its settlement follows, untimed."""
    clock = time.perf_counter_ns

    def probe() -> tuple[bool, tuple[int, ...]]:
        start = clock()
        decision = limiter.reserve(user)
        elapsed = clock() - start
        limiter.settle(decision)
        return decision.allowed, (elapsed,)

    return probe


def _tier_probe(limiter: OursTier, user: int) -> Probe:
    """Times the reservation alone, and the reservation with its settlement."""
    clock = time.perf_counter_ns

    def probe() -> tuple[bool, tuple[int, ...]]:
        start = clock()
        decision = limiter.reserve(user)
        reserved = clock()
        limiter.settle(decision)
        return decision.allowed, (reserved - start, clock() - start)

    return probe


def _measure(
    probes: dict[tuple[str, ...], Probe],
    refill: Callable[[], None],
    guard: Guard,
    count: int,
    rounds: int,
    budget: float,
    log: Callable[[str], None],
) -> dict[str, dict[str, Any]]:
    """Run every probe in turn, `rounds` times, so background load hits all of them alike.

    Each probe makes at most `count` calls in all and stops early after `budget` seconds.
    A round during which the database was flushed is taken again from the filled state.
    """
    times: dict[str, list[int]] = {name: [] for names in probes for name in names}
    outcomes: dict[tuple[str, ...], list[bool]] = {names: [] for names in probes}
    per_round = math.ceil(count / rounds)
    empty = True
    for _ in range(rounds):
        for _ in range(ATTEMPTS):
            if empty:
                guard.client.flushdb()  # what ran after a flush must not count either
            guard.arm()
            if empty:
                refill()
            found = {
                names: _round(probe, per_round, budget / rounds) for names, probe in probes.items()
            }
            empty = not guard.intact()
            if not empty:
                break
            log("  another client flushed the bench database during a round; taking it again")
        else:
            raise Flushed("The bench database was flushed during every attempt at a round.")
        for names, (oks, elapsed) in found.items():
            outcomes[names] += oks
            for name, ns in zip(names, zip(*elapsed, strict=True), strict=True):
                times[name] += ns
    return {name: summary(times[name], outcomes[names]) for names in probes for name in names}


def _round(probe: Probe, calls: int, budget: float) -> tuple[list[bool], list[tuple[int, ...]]]:
    gc.collect()
    oks: list[bool] = []
    elapsed: list[tuple[int, ...]] = []
    deadline = time.perf_counter_ns() + int(budget * 1e9)
    for _ in range(calls):
        ok, ns = probe()
        oks.append(ok)
        elapsed.append(ns)
        if time.perf_counter_ns() > deadline:
            break
    return oks, elapsed


def _size_round(
    redis_url: str,
    client: Any,
    size: int,
    count: int,
    rounds: int,
    warmup: int,
    budget: float,
    log: Callable[[str], None],
) -> list[dict[str, Any]]:
    filled = max(0, size - count // 2)
    user, warm = 1, 0
    namespace = f"cost{size}-{uuid.uuid4().hex[:6]}"
    probes: dict[tuple[str, ...], Probe] = {(PING,): _hit_probe(client.ping)}
    probes[(MINIMAL_FLOOR,)] = _minimal_probe(client, size, namespace, user)
    limiters = [make(name, size, redis_url, namespace) for name in NAMES]
    limiters += [throttles.make(name, size, redis_url, namespace) for name in throttles.NAMES]
    for limiter in limiters:
        if isinstance(limiter, throttles.Chat):
            probes[(limiter.name,)] = _reserve_probe(limiter, user)
        elif isinstance(limiter, OursTier):
            probes[(SCRIPT_FLOOR,)] = _floor_probe(client, limiter, user)
            probes[(TIER_RESERVE, TIER_SETTLED)] = _tier_probe(limiter, user)
        else:
            probes[(limiter.name,)] = _hit_probe(partial(limiter.hit, user))
        for _ in range(warmup):
            limiter.hit(warm)
    for _ in range(warmup):
        client.ping()

    def refill() -> None:
        for limiter in limiters:
            limiter.fill(user, filled)

    stats = _measure(probes, refill, Guard(client), count, rounds, budget, log)
    ping = stats[PING]["median_us"]
    rows = []
    for name in SERIES:
        prefilled = 0 if name in (PING, SCRIPT_FLOOR, MINIMAL_FLOOR) else filled
        row = {"series": name, "limit": size, "prefilled": prefilled}
        row.update(stats[name], x_ping=stats[name]["median_us"] / ping)
        rows.append(row)
    return rows


def run(
    redis_url: str,
    *,
    sizes: tuple[int, ...] = SIZES,
    count: int = 2_000,
    rounds: int = 10,
    warmup: int = 200,
    budget: float = 10.0,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """One row per (series, limit size).

    Before timing, the measured user is filled to `size - count / 2` admitted requests,
    so at large sizes about half the timed decisions admit (against a log as long as the
    limit allows) and half deny; at small sizes nearly all deny. Each series makes at most
    `count` timed calls and spends at most about `budget` seconds.
    """
    client = connect(redis_url)
    rows: list[dict[str, Any]] = []
    for size in sizes:
        found = _size_round(redis_url, client, size, count, rounds, warmup, budget, log)
        for row in found:
            median, n = row["median_us"], row["n"]
            log(f"  {row['series']} at {size:,}: median {median:.0f} us ({n} calls)")
        rows += found
    client.close()
    return rows
