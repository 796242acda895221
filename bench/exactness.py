"""Exactness: how many requests each limiter admits when many processes contend for one user."""

from __future__ import annotations

import multiprocessing
import queue
import threading
import time
import uuid
from collections.abc import Callable
from functools import partial
from typing import Any

from quotas.engine import connect

from .django_env import configure
from .guard import guarded
from .limiters import NAMES, OURS_TIER, Limiter, make
from .ours import OursTier

USER = 1
TIMEOUT = 120.0  # seconds for the whole contest; a stuck worker fails it, never hangs it


def build(name: str, limit: int, redis_url: str, namespace: str) -> Limiter:
    if name == OURS_TIER:
        # The per-day request limit binds; the per-minute rate is far above it, since a rate
        # refills while the contest runs and would rightly admit a few more.
        return OursTier(limit, redis_url, namespace, per_minute=100 * limit)
    return make(name, limit, redis_url, namespace)


def _attempts(limiter: Limiter, attempts: int, start: threading.Barrier, out: list[int]) -> None:
    start.wait(timeout=TIMEOUT)
    admitted = 0
    for _ in range(attempts):
        if limiter.hit(USER):
            admitted += 1
    out.append(admitted)


def _worker(
    redis_url: str,
    names: tuple[str, ...],
    limit: int,
    threads: int,
    attempts: int,
    namespace: str,
    barrier: Any,
    results: Any,
) -> None:
    """One process: its own clients, `threads` threads, released together with the others."""
    configure(redis_url)
    for name in names:
        limiter = build(name, limit, redis_url, namespace)
        start = threading.Barrier(threads + 1)
        counts: list[int] = []
        pool = [
            threading.Thread(target=_attempts, args=(limiter, attempts, start, counts))
            for _ in range(threads)
        ]
        for thread in pool:
            thread.start()
        barrier.wait(timeout=TIMEOUT)  # every process is ready: go
        start.wait(timeout=TIMEOUT)
        for thread in pool:
            thread.join(timeout=TIMEOUT)
        results.put((name, sum(counts)))


def _collect(results: Any, workers: list[Any], expected: int, admitted: dict[str, int]) -> None:
    deadline = time.monotonic() + TIMEOUT
    received = 0
    while received < expected:
        try:
            name, count = results.get(timeout=1.0)
        except queue.Empty:
            failed = [w.exitcode for w in workers if w.exitcode not in (None, 0)]
            if failed:
                raise RuntimeError(f"An exactness worker failed (exit codes {failed}).") from None
            if time.monotonic() > deadline:
                raise RuntimeError("The exactness contest did not finish in time.") from None
            continue
        admitted[name] += count
        received += 1


def _contest(
    redis_url: str, names: tuple[str, ...], limit: int, processes: int, threads: int, attempts: int
) -> dict[str, int]:
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(processes)
    results = context.Queue()
    namespace = f"exact-{uuid.uuid4().hex[:8]}"
    args = (redis_url, names, limit, threads, attempts, namespace, barrier, results)
    workers = [context.Process(target=_worker, args=args, daemon=True) for _ in range(processes)]
    for worker in workers:
        worker.start()
    admitted = dict.fromkeys(names, 0)
    try:
        _collect(results, workers, processes * len(names), admitted)
    finally:
        for worker in workers:
            worker.join(timeout=10)
            if worker.is_alive():
                worker.terminate()
    return admitted


def run(
    redis_url: str,
    *,
    names: tuple[str, ...] = NAMES,
    limit: int = 50,
    processes: int = 4,
    threads: int = 8,
    attempts: int = 10,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Admitted requests per limiter out of `processes * threads * attempts` against `limit`."""
    client = connect(redis_url)
    contest = partial(_contest, redis_url, names, limit, processes, threads, attempts)
    admitted = guarded(client, contest, "the exactness contest", log)
    client.close()
    rows = []
    for name in names:
        rows.append(
            {
                "limiter": name,
                "limit": limit,
                "attempts": processes * threads * attempts,
                "setup": f"{processes} processes x {threads} threads x {attempts} attempts",
                "admitted": admitted[name],
                "over": admitted[name] - limit,
            }
        )
        log(f"  {name}: {admitted[name]} admitted against a limit of {limit}")
    return rows
