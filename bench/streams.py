"""Concurrent slow streams: N streaming chat requests at once against a mock provider that
takes 2 s to the first token and streams 50 chunks over 5 s.

Three servers run side by side on 127.0.0.1: the project under uvicorn (ASGI, the async
views), the project under gunicorn (WSGI, the sync views, 3 workers x 8 threads as the
README deploys it), and `bench.passthrough` under uvicorn (no quotas: the floor). Each
gets the same N streams from one asyncio client process; per N it reports completed
streams, errors, the time to first token added over the mock's own 2 s (p50 / p99), and
the peak RSS of the server's processes. For the two quota servers it also checks that
every concurrency lease is released afterwards and that the ledger grew by exactly the
usage the provider reported in the streams.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar

import psutil

from quotas.mock_provider import httpx, reply_words

from .decision import percentile
from .e2e import ROOT, Skip, environment, prepare
from .server import free_port

SIZES = (100, 500, 1000)
# Past this the WSGI server's 24 threads serve the streams 24 at a time: minutes per run.
WSGI_LIMIT = 500
FIRST_TOKEN = 2.0
CHUNKS = 50
STREAM_SECONDS = 5.0
WORKERS = 2
WSGI = {"workers": 3, "threads": 8}

KINDS = ("uvicorn", "gunicorn", "passthrough")
MODEL = "gpt-4o-mini"

R = TypeVar("R")


def _command(kind: str, port: int) -> list[str]:
    if kind == "gunicorn":
        return [
            sys.executable,
            "-m",
            "gunicorn",
            "quotaproject.wsgi:application",
            f"--bind=127.0.0.1:{port}",
            f"--workers={WSGI['workers']}",
            "--worker-class=gthread",
            f"--threads={WSGI['threads']}",
            "--timeout=600",
            "--backlog=4096",
            "--log-level=warning",
        ]
    app = "quotaproject.asgi:application" if kind == "uvicorn" else "bench.passthrough:app"
    return [
        sys.executable,
        "-m",
        "uvicorn",
        app,
        "--host=127.0.0.1",
        f"--port={port}",
        f"--workers={WORKERS}",
        "--backlog=4096",
        "--lifespan=off",
        "--no-access-log",
        "--log-level=warning",
    ]


@contextmanager
def server(kind: str, env: dict[str, str], log: Path) -> Iterator[tuple[int, int]]:
    """(port, pid) of a running server of `kind`."""
    port = free_port()
    with log.open("wb") as out:
        process = subprocess.Popen(_command(kind, port), env=env, cwd=ROOT, stdout=out, stderr=out)
        try:
            yield port, process.pid
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)


PROMPT = "Please stream a long answer to this benchmark now"  # 8 words the mock echoes


def body(first: float, gap: float, chunks: int) -> dict[str, Any]:
    """A streamed request the mock answers after `first` s with `chunks` content chunks,
    `gap` s apart."""
    tokens = _tokens_for(chunks)
    markers = f"[mock-first:{first}] [mock-latency:{gap}] [mock-tokens:{tokens}]"
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": f"{PROMPT} {markers}"}],
        "max_tokens": tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def _tokens_for(chunks: int) -> int:
    """The reply length in tokens that the mock sends as `chunks` content chunks."""
    messages = [{"role": "user", "content": PROMPT}]
    tokens = chunks
    while len(reply_words(messages, MODEL, tokens)) < chunks:
        tokens += 1
    return tokens


async def _streams(port: int, key: str, n: int, request: dict[str, Any]) -> list[dict[str, Any]]:
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", limits=limits, timeout=httpx.Timeout(900)
    ) as client:

        async def one() -> dict[str, Any]:
            started = time.monotonic()
            result: dict[str, Any] = {"status": 0, "ttft": None, "done": False, "tokens": 0}
            try:
                async with client.stream(
                    "POST", "/v1/chat/completions", json=request, headers=headers
                ) as response:
                    result["status"] = response.status_code
                    async for line in response.aiter_lines():
                        if not line.startswith("data: "):
                            continue
                        if result["ttft"] is None:
                            result["ttft"] = time.monotonic() - started
                        if line == "data: [DONE]":
                            result["done"] = True
                        elif usage := json.loads(line[len("data: ") :]).get("usage"):
                            result["tokens"] = usage["total_tokens"]
            except (httpx.HTTPError, OSError) as exc:
                result["error"] = type(exc).__name__
            return result

        return await asyncio.gather(*(one() for _ in range(n)))


def _in_own_loop(coroutine: Coroutine[Any, Any, R]) -> R:
    """`asyncio.run` in a thread of its own, whatever loop the calling thread has."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


class PeakRSS:
    """The largest total RSS of a process and its children, sampled every 0.2 s."""

    def __init__(self, pid: int) -> None:
        self.root = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def total(self) -> int:
        processes = [self.root, *self.root.children(recursive=True)]
        total = 0
        for process in processes:
            with suppress(psutil.Error):
                total += process.memory_info().rss
        return total

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.total())
            self._stop.wait(0.2)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _quota(port: int, key: str) -> dict[str, Any]:
    response = httpx.get(
        f"http://127.0.0.1:{port}/v1/quota", headers={"Authorization": f"Bearer {key}"}
    )
    return dict(response.json())


def _ledger(env: dict[str, str]) -> int:
    done = subprocess.run(
        [sys.executable, "-m", "bench.e2e_fixture", "ledger"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return int(done.stdout.strip().splitlines()[-1])


def _ready(port: int, log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=2)
            return
        except httpx.HTTPError:
            time.sleep(0.25)
    raise Skip(f"a server did not start:\n{log.read_text(errors='replace')[-1500:]}")


def measure(
    kind: str,
    port: int,
    pid: int,
    key: str,
    n: int,
    request: dict[str, Any],
    first: float,
    env: dict[str, str],
    log: Path | None = None,
) -> dict[str, Any]:
    quotas = kind != "passthrough"
    ledger_before = _ledger(env) if quotas else 0
    fallbacks_before = _ledger_mode_decisions(log)
    with PeakRSS(pid) as rss:
        started = time.monotonic()
        results = _in_own_loop(_streams(port, key, n, request))
        elapsed = time.monotonic() - started
    completed = [r for r in results if r["status"] == 200 and r["done"]]
    added = sorted(r["ttft"] - first for r in completed)
    row: dict[str, Any] = {
        "server": kind,
        "n": n,
        "completed": len(completed),
        "errors": n - len(completed),
        "statuses": sorted({r["status"] for r in results}),
        "ttft_added_p50_ms": percentile(added, 50) * 1000,
        "ttft_added_p99_ms": percentile(added, 99) * 1000,
        "seconds": elapsed,
        "rss_mib": rss.peak / 2**20,
    }
    if quotas:
        time.sleep(0.5)  # the last settlements, after the last bytes were sent
        reported = sum(r["tokens"] for r in completed)
        row["leases_held_after"] = _quota(port, key)["limits"]["max_concurrent_requests"]["used"]
        row["ledger_tokens"] = _ledger(env) - ledger_before
        row["reported_tokens"] = reported
        # Decisions the server took from the ledger because Redis did not answer in time
        # (its client's timeouts also count the event loop's lag).
        row["ledger_mode_decisions"] = _ledger_mode_decisions(log) - fallbacks_before
    return row


def _ledger_mode_decisions(log: Path | None) -> int:
    if log is None or not log.exists():
        return 0
    with log.open(encoding="utf-8", errors="replace") as lines:
        return sum("budgets enforced from the ledger" in line for line in lines)


def run(
    redis_url: str,
    *,
    sizes: tuple[int, ...] = SIZES,
    first: float = FIRST_TOKEN,
    chunks: int = CHUNKS,
    seconds: float = STREAM_SECONDS,
    wsgi_limit: int = WSGI_LIMIT,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Rows per server and N, or {"skipped": why}."""
    with tempfile.TemporaryDirectory(prefix="quotas-bench-") as tmp:
        database = os.environ.get("BENCH_DATABASE_URL") or f"sqlite:///{tmp}/bench.sqlite3"
        env = environment(redis_url, database)
        try:
            return _run(env, Path(tmp), sizes, first, chunks, seconds, wsgi_limit, log)
        except Skip as exc:
            return {"skipped": str(exc)}


def _run(
    env: dict[str, str],
    tmp: Path,
    sizes: tuple[int, ...],
    first: float,
    chunks: int,
    seconds: float,
    wsgi_limit: int,
    log: Callable[[str], None],
) -> dict[str, Any]:
    key = prepare(env)
    request = body(first, seconds / chunks, chunks)
    rows = []
    with ExitStack() as stack:
        servers = {
            kind: stack.enter_context(server(kind, env, tmp / f"{kind}.log")) for kind in KINDS
        }
        warm_up = body(0.0, 0.01, 5)
        for kind, (port, _) in servers.items():
            _ready(port, tmp / f"{kind}.log")
            # Every worker loads its code, tokenizers and connections before the timing.
            _in_own_loop(_streams(port, key, 4 * WSGI["workers"] * WSGI["threads"], warm_up))
        for n in sizes:
            for kind in KINDS:
                if kind == "gunicorn" and n > wsgi_limit:
                    continue
                port, pid = servers[kind]
                row = measure(kind, port, pid, key, n, request, first, env, tmp / f"{kind}.log")
                rows.append(row)
                log(
                    f"  streams {n:>5} {kind:<11} completed {row['completed']:>5}, "
                    f"TTFT added p50 {row['ttft_added_p50_ms']:,.0f} ms, "
                    f"RSS {row['rss_mib']:,.0f} MiB, {row['seconds']:.1f} s"
                )
    return {
        "database": env["DATABASE_URL"].split(":", 1)[0],
        "mock": {"first_token_s": first, "chunks": chunks, "stream_s": seconds},
        "servers": {
            "uvicorn": f"uvicorn, {WORKERS} workers (the project, ASGI)",
            "gunicorn": f"gunicorn, {WSGI['workers']} workers x {WSGI['threads']} threads "
            "(the project, WSGI)",
            "passthrough": f"uvicorn, {WORKERS} workers (a bare async proxy, no quotas)",
        },
        "wsgi_limit": wsgi_limit,
        "rows": rows,
    }
