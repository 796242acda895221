"""Fault injection: a real redis-server killed and restarted, provider faults, two app servers.

Prints and asserts: requests sent under fault, answers 500 (must be 0), budget overspend
(must be 0), ledger rows lost (must be 0).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from django.db.models import Sum

from quotas.models import UsageRecord

from .http import call

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

TOKENS_PER_DAY = 4000
FAULTS = ("timeout", "500", "429", "malformed", "cut")


class Tally:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sent = 0
        self.under_fault = 0
        self.statuses: dict[int, int] = {}
        self.served = 0  # answers that delivered a completion (and must be in the ledger)

    def record(self, status: int, faulty: bool, served: bool) -> None:
        with self.lock:
            self.sent += 1
            self.under_fault += faulty
            self.statuses[status] = self.statuses.get(status, 0) + 1
            self.served += served


def _chat(
    base: str,
    key: str,
    tally: Tally,
    *,
    fault: str = "",
    stream: bool = False,
    faulty: bool = False,
) -> tuple[int, bytes]:
    content = "Tell me something." + (f" [mock-fault:{fault}]" if fault else "")
    body = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": content}],
        "max_tokens": 40,
        "stream": stream,
    }
    status, _, raw = call(
        f"{base}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
    )
    served = status == 200 and (not stream or b'"delta"' in raw)
    tally.record(status, faulty or bool(fault), served)
    return status, raw


def _burst(n: int, fn: Any, threads: int = 8) -> None:
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda i: fn(i), range(n)))


def settled_totals(user: Any, served: int) -> dict[str, Any]:
    """The user's ledger totals once `served` answers are settled (a completion is settled
    after its answer is sent)."""
    deadline = time.monotonic() + 10
    while True:
        totals = UsageRecord.objects.filter(user=user).aggregate(
            requests=Sum("requests"),
            prompt=Sum("prompt_tokens"),
            completion=Sum("completion_tokens"),
        )
        if (totals["requests"] or 0) >= served or time.monotonic() > deadline:
            return totals
        time.sleep(0.05)


def test_faults_never_answer_500_never_overspend_never_lose_ledger_rows(
    fault_redis, app_servers, tier_user
):
    user, key = tier_user(
        tokens_per_day=TOKENS_PER_DAY,
        requests_per_minute=100_000,
        burst=100_000,
        max_concurrent_requests=50,
    )
    redis_url = f"redis://{fault_redis.host}:{fault_redis.port}/0"
    servers = app_servers(redis_url, count=2, QUOTAS_UPSTREAM_TIMEOUT="2")
    tally = Tally()

    def server(i: int) -> str:
        return servers[i % 2]

    # Normal traffic, JSON and streams.
    _burst(10, lambda i: _chat(server(i), key, tally, stream=i % 3 == 0))

    # Provider faults through the mock: each settles or refunds.
    _burst(15, lambda i: _chat(server(i), key, tally, fault=FAULTS[i % len(FAULTS)]))
    _burst(5, lambda i: _chat(server(i), key, tally, fault="cut", stream=True))

    # Redis killed: budgets keep being enforced from the ledger.
    fault_redis.kill()
    _burst(12, lambda i: _chat(server(i), key, tally, faulty=True, stream=i % 4 == 0))

    # Redis back, empty: enforcement resumes without a restart, re-seeded from the ledger.
    fault_redis.start()
    _burst(10, lambda i: _chat(server(i), key, tally))

    # Spend the rest of the budget concurrently until it runs out.
    for _ in range(10):
        _burst(24, lambda i: _chat(server(i), key, tally, stream=i % 5 == 0))
        if tally.statuses.get(429, 0) >= 10:
            break

    totals = settled_totals(user, tally.served)
    spent = (totals["prompt"] or 0) + (totals["completion"] or 0)
    overspend = max(0, spent - TOKENS_PER_DAY)
    lost = tally.served - (totals["requests"] or 0)
    print(
        f"\nrequests sent: {tally.sent}, under fault: {tally.under_fault}, "
        f"statuses: {dict(sorted(tally.statuses.items()))}\n"
        f"answers 500: {tally.statuses.get(500, 0)}, budget overspend: {overspend} tokens "
        f"({spent} of {TOKENS_PER_DAY} settled), ledger rows lost: {lost}"
    )
    assert tally.statuses.get(500, 0) == 0
    assert overspend == 0
    assert lost == 0
    assert tally.statuses.get(429, 0) > 0  # the budget did run out


def test_a_crashed_workers_lease_expires_by_itself(real_redis, app_servers, tier_user):
    _, key = tier_user(max_concurrent_requests=1)
    (base,) = app_servers(real_redis, count=1, QUOTAS_LEASE_SECONDS="8")
    headers = {"Authorization": f"Bearer {key}"}
    slow = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "Take your time [mock-latency:20]"}],
        "max_tokens": 10,
    }
    quick = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}

    pending = ThreadPoolExecutor(1).submit(
        call, f"{base}/v1/chat/completions", json=slow, headers=headers, timeout=30
    )
    time.sleep(1.5)  # the slow request holds the only slot
    status, _, raw = call(f"{base}/v1/chat/completions", json=quick, headers=headers)
    assert status == 429, raw
    assert json.loads(raw)["error"]["code"] == "rate_limit_exceeded"

    # Crash the worker serving it: nothing settles, the lease is left behind.
    master = int(
        subprocess.run(
            ["pgrep", "-f", f"gunicorn.*{base.rsplit(':', 1)[1]}"],
            capture_output=True,
            text=True,
        ).stdout.split()[0]
    )
    workers = subprocess.run(
        ["pgrep", "-P", str(master)], capture_output=True, text=True
    ).stdout.split()
    for pid in workers:
        os.kill(int(pid), signal.SIGKILL)
    with pytest.raises(ConnectionError):  # its client saw the connection drop
        pending.result()
    status, _, _ = call(f"{base}/v1/chat/completions", json=quick, headers=headers)
    assert status == 429  # still held by the dead worker's lease

    deadline = time.monotonic() + 25
    while time.monotonic() < deadline:
        status, _, _ = call(f"{base}/v1/chat/completions", json=quick, headers=headers)
        if status == 200:
            break
        time.sleep(0.5)
    assert status == 200
