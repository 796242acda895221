from __future__ import annotations

import multiprocessing
import random
import threading
import traceback
from typing import Any

import pytest

from quotas.engine import Limit, Policy, QuotaEngine, connect

from .policies import NOW

PROCESSES, THREADS, ATTEMPTS = 4, 8, 10
TIMEOUT = 60

EXACTLY_50 = {
    "requests per day": Policy((Limit("requests per day", "dr", 50),)),
    "rate with burst": Policy(
        (Limit("rate", "rr", 1, burst=50, interval=86_400),), track_usage=False
    ),
}
TOKENS = Policy((Limit("tokens per day", "dt", 2_000), Limit("tokens per month", "mt", 2_500)))


def in_threads(target: Any, *args: Any) -> list[Any]:
    """Run `target(index, *args)` in THREADS threads released together; their results."""
    results: list[Any] = [None] * THREADS
    errors: list[BaseException] = []
    barrier = threading.Barrier(THREADS)

    def run(index: int) -> None:
        try:
            barrier.wait(timeout=TIMEOUT)
            results[index] = target(index, *args)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=TIMEOUT)
    if errors:
        raise errors[0]
    return results


def count_granted(index: int, engine: QuotaEngine, policy: Policy) -> int:
    return sum(engine.reserve("shared", policy, now=NOW).allowed for _ in range(ATTEMPTS))


def reserve_and_settle(index: int, engine: QuotaEngine, seed: int) -> tuple[int, int, int, int]:
    """Reserve random token amounts, settle each to a random actual; report what happened."""
    rng = random.Random(seed * 1_000 + index)
    granted = denied = settled = highest = 0
    for _ in range(ATTEMPTS):
        asked = rng.randint(1, 400)
        decision = engine.reserve("shared", TOKENS, tokens=asked, lease=True, now=NOW)
        if not decision.allowed:
            denied += 1
            continue
        granted += 1
        highest = max(highest, decision.state("dt").used)
        actual = rng.randint(0, asked)
        assert engine.settle(decision.reservation, tokens=actual, spend=0)
        settled += actual
    return granted, denied, settled, highest


def process_main(url: str, start: Any, results: Any, job: str, arg: Any) -> None:
    try:
        engine = QuotaEngine(connect(url), prefix="test")
        engine.client.ping()
        start.wait(timeout=TIMEOUT)
        target = count_granted if job == "exact" else reserve_and_settle
        results.put(("ok", in_threads(target, engine, arg)))
    except BaseException:
        start.abort()
        results.put(("error", traceback.format_exc()))


def in_processes(url: str, job: str, args: list[Any]) -> list[Any]:
    # fork starts in milliseconds; each process still opens its own connection.
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    context = multiprocessing.get_context(method)
    start = context.Barrier(PROCESSES)
    results = context.Queue()
    processes = [
        context.Process(target=process_main, args=(url, start, results, job, arg), daemon=True)
        for arg in args
    ]
    for process in processes:
        process.start()
    try:
        collected = [results.get(timeout=TIMEOUT) for _ in processes]
    finally:
        for process in processes:
            process.join(timeout=TIMEOUT)
            if process.is_alive():  # pragma: no cover - only on a hung run
                process.kill()
    errors = [value for status, value in collected if status == "error"]
    assert not errors, errors[0]
    return [result for _, per_process in collected for result in per_process]


@pytest.mark.slow
@pytest.mark.parametrize("policy", EXACTLY_50.values(), ids=EXACTLY_50.keys())
def test_320_attempts_from_4_processes_admit_exactly_50(real_redis, redis_client, policy):
    granted = in_processes(real_redis, "exact", [policy] * PROCESSES)
    assert len(granted) == PROCESSES * THREADS
    assert sum(granted) == 50
    engine = QuotaEngine(redis_client, prefix="test")
    assert not engine.reserve("shared", policy, now=NOW).allowed


def test_threads_admit_exactly_the_limit(engine):
    policy = EXACTLY_50["requests per day"]
    granted = in_threads(count_granted, engine, policy)
    assert sum(granted) == 50
    assert engine.peek("shared", policy, now=NOW).state("dr").used == 50


def check_token_budget(engine: QuotaEngine, outcomes: list[tuple[int, int, int, int]]) -> None:
    granted = sum(o[0] for o in outcomes)
    denied = sum(o[1] for o in outcomes)
    settled = sum(o[2] for o in outcomes)
    highest = max(o[3] for o in outcomes)
    assert granted + denied == len(outcomes) * ATTEMPTS
    assert granted and denied  # the budget really was contended
    # Reservations in flight plus settled usage never passed the limit.
    assert highest <= 2_000
    peeked = engine.peek("shared", TOKENS, now=NOW)
    assert peeked.state("dt").used == settled <= 2_000
    assert peeked.state("mt").used == settled
    assert peeked.state("dt").remaining == 2_000 - settled


def test_threads_never_overspend_tokens(engine):
    check_token_budget(engine, in_threads(reserve_and_settle, engine, 0))


@pytest.mark.slow
def test_processes_never_overspend_tokens(real_redis, redis_client):
    outcomes = in_processes(real_redis, "tokens", list(range(1, PROCESSES + 1)))
    check_token_budget(QuotaEngine(redis_client, prefix="test"), outcomes)
