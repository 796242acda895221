"""A bounded HTTP load generator: a fixed number of requests from a few keep-alive threads."""

from __future__ import annotations

import http.client
import itertools
import json
import threading
import time
from collections import Counter
from typing import Any

from .decision import percentile

CHAT_PATH = "/v1/chat/completions"
CHAT_BODY = json.dumps(
    {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "Say hello to the benchmark."}],
        "max_tokens": 16,
    }
).encode()


def post(port: int, key: str, timeout: float = 10.0) -> tuple[int, bytes]:
    """One chat request: (status, body); status 0 if the server could not be reached."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", CHAT_PATH, body=CHAT_BODY, headers=_headers(key))
        response = conn.getresponse()
        return response.status, response.read()
    except (OSError, http.client.HTTPException):
        return 0, b""
    finally:
        conn.close()


def _headers(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}


def _client(
    port: int, key: str, tickets: Any, total: int, deadline: float, out: list[tuple[int, int]]
) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10.0)
    headers = _headers(key)
    while next(tickets) < total and time.monotonic() < deadline:
        start = time.perf_counter_ns()
        try:
            conn.request("POST", CHAT_PATH, body=CHAT_BODY, headers=headers)
            response = conn.getresponse()
            response.read()
            status = response.status
        except (OSError, http.client.HTTPException):
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10.0)
            status = 0
        out.append((status, time.perf_counter_ns() - start))
    conn.close()


def load(
    port: int, key: str, total: int, concurrency: int, max_seconds: float = 120.0
) -> dict[str, Any]:
    """Send `total` chat requests over `concurrency` connections (stopping after `max_seconds`)."""
    tickets = itertools.count()  # next() on it is atomic under the GIL
    deadline = time.monotonic() + max_seconds
    outs: list[list[tuple[int, int]]] = [[] for _ in range(concurrency)]
    threads = [
        threading.Thread(target=_client, args=(port, key, tickets, total, deadline, out))
        for out in outs
    ]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=max_seconds + 15)
    elapsed = time.perf_counter() - started
    done = [item for out in outs for item in out]
    return {"elapsed": elapsed, "samples": done}


def rate(run: dict[str, Any]) -> float:
    """Answers 200 per second in one run of `load`."""
    ok = sum(1 for status, _ in run["samples"] if status == 200)
    return ok / run["elapsed"] if run["elapsed"] else 0.0


def combine(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Requests per second and latency over several runs of `load`."""
    samples = [item for run in runs for item in run["samples"]]
    elapsed = sum(run["elapsed"] for run in runs)
    statuses = Counter(status for status, _ in samples)
    ok = sorted(ns / 1e6 for status, ns in samples if status == 200)
    return {
        "requests": len(samples),
        "ok": len(ok),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "seconds": elapsed,
        "rps": len(ok) / elapsed if elapsed else 0.0,
        "p50_ms": percentile(ok, 50),
        "p99_ms": percentile(ok, 99),
    }
