"""End to end: /v1/chat/completions on the mock provider under gunicorn, quotas on and off.

Two servers run side by side on 127.0.0.1, the project with `bench.settings_e2e` and the
same with `QUOTAS_BENCH_DISABLE=1`; the load alternates between them in rounds, so
background load falls on both alike.
"""

from __future__ import annotations

import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from .load import combine, load, post, rate
from .server import free_port

ROOT = Path(__file__).resolve().parent.parent
NEEDS = (
    "quotas.api.chat",
    "quotas.api.chat_input",
    "quotas.mock_provider",
    "quotas.upstream",
    "gunicorn",
)


class Skip(Exception):
    """The e2e bench cannot run here yet; the message says why."""


def environment(redis_url: str, database_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    env.update(
        DJANGO_SETTINGS_MODULE="bench.settings_e2e",
        DJANGO_SECRET_KEY=env.get("DJANGO_SECRET_KEY") or "bench-only-secret-key",
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        QUOTAS_PROVIDER="mock",
        QUOTAS_MOCK_LATENCY="0",
        QUOTAS_MOCK_FAIL="",
        PYTHONPATH=str(ROOT),
    )
    env.pop("QUOTAS_BENCH_DISABLE", None)
    return env


def prepare(env: dict[str, str]) -> str:
    """Migrate the database and return an API key on the bench tier."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.e2e_fixture"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    if done.returncode != 0 or not done.stdout.strip():
        raise Skip(f"preparing the database failed:\n{done.stderr[-2000:]}")
    return done.stdout.strip().splitlines()[-1]


@contextmanager
def gunicorn(
    env: dict[str, str], port: int, log: Path, workers: int, threads: int
) -> Iterator[int]:
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "quotaproject.wsgi:application",
        f"--bind=127.0.0.1:{port}",
        f"--workers={workers}",
        "--worker-class=gthread",
        f"--threads={threads}",
        "--keep-alive=5",
        "--log-level=warning",
    ]
    with log.open("wb") as out:
        server = subprocess.Popen(command, env=env, cwd=ROOT, stdout=out, stderr=out)
        try:
            yield port
        finally:
            server.terminate()
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(timeout=5)


def ready(port: int, key: str, log: Path, timeout: float = 60.0) -> None:
    """Wait for the server; skip unless a chat request answers 200."""
    deadline = time.monotonic() + timeout
    status, body = 0, b""
    while time.monotonic() < deadline:
        status, body = post(port, key)
        if status:
            break
        time.sleep(0.25)
    if status != 200:
        tail = log.read_text(errors="replace")[-1500:]
        raise Skip(
            f"POST /v1/chat/completions answered {status or 'nothing'}: "
            f"{body[:300].decode(errors='replace')}\n{tail}"
        )


def run(
    redis_url: str,
    *,
    requests: int = 8_000,
    concurrency: int = 8,
    workers: int = 2,
    threads: int = 4,
    rounds: int = 8,
    latency_requests: int = 200,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Figures for quotas on and off, or {"skipped": why}."""
    lacking = [name for name in NEEDS if importlib.util.find_spec(name) is None]
    if lacking:
        return {"skipped": f"not available yet: {', '.join(lacking)}"}
    with tempfile.TemporaryDirectory(prefix="quotas-bench-") as tmp:
        database = os.environ.get("BENCH_DATABASE_URL") or f"sqlite:///{tmp}/bench.sqlite3"
        env = environment(redis_url, database)
        try:
            return _run(
                env,
                Path(tmp),
                (requests, concurrency, workers, threads, rounds, latency_requests),
                _ping(redis_url),
                log,
            )
        except Skip as exc:
            return {"skipped": str(exc)}


def _run(
    env: dict[str, str],
    tmp: Path,
    sizes: tuple[int, int, int, int, int, int],
    ping: Callable[[], float],
    log: Callable[[str], None],
) -> dict[str, Any]:
    requests, concurrency, workers, threads, rounds, latency_requests = sizes
    key = prepare(env)
    modes = {"on": env, "off": {**env, "QUOTAS_BENCH_DISABLE": "1"}}
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in modes}
    with ExitStack() as stack:
        ports = {}
        for mode, mode_env in modes.items():
            logfile = tmp / f"gunicorn-{mode}.log"
            ports[mode] = stack.enter_context(
                gunicorn(mode_env, free_port(), logfile, workers, threads)
            )
        for mode, port in ports.items():
            ready(port, key, tmp / f"gunicorn-{mode}.log")
            load(port, key, min(400, requests), concurrency)  # warm-up: every thread
        per_round = max(1, requests // rounds)
        for index in range(rounds):
            order = ("off", "on") if index % 2 else ("on", "off")
            for mode in order:
                runs[mode].append(load(ports[mode], key, per_round, concurrency))
                log(f"  e2e round {index + 1}, quotas {mode}: {runs[mode][-1]['elapsed']:.1f} s")
        added = _added_latency(ports, key, rounds, latency_requests, ping)
    on, off = combine(runs["on"]), combine(runs["off"])
    # Each round's two runs met the same background load: the median of their ratios
    # is the figure least moved by a burst of other work during one run.
    per_round = sorted(
        (1 - rate(on_run) / rate(off_run)) * 100
        for on_run, off_run in zip(runs["on"], runs["off"], strict=True)
        if rate(off_run)
    )
    return {
        "database": env["DATABASE_URL"].split(":", 1)[0],
        "server": f"gunicorn, {workers} workers, gthread x {threads} threads",
        "concurrency": concurrency,
        "requests_per_mode": requests,
        "on": on,
        "off": off,
        "rounds": rounds,
        "cost_percent": statistics.median(per_round) if per_round else None,
        "cost_percent_rounds": per_round,
        "cost_percent_pooled": (1 - on["rps"] / off["rps"]) * 100 if off["rps"] else None,
        **added,
    }


def _one_at_a_time(port: int, key: str, requests: int) -> float:
    """Median milliseconds of `requests` requests sent one after the other, each on its own
    connection: a server thread still closing the previous answer (where the settlement
    runs) does not hold up the next."""
    samples = []
    for _ in range(requests):
        start = time.perf_counter_ns()
        status, _ = post(port, key)
        if status == 200:
            samples.append((time.perf_counter_ns() - start) / 1e6)
    return statistics.median(samples) if samples else float("nan")


def _added_latency(
    ports: dict[str, int], key: str, rounds: int, requests: int, ping: Callable[[], float]
) -> dict[str, Any]:
    """What the quota path adds to one client's wait: in each round the median of
    `requests` one-at-a-time requests with quotas on and off, and PING's median, taken
    together; the figure is the median over rounds of (on - off) / PING. The connection
    is opened in both alike."""
    added, pings = [], []
    for index in range(rounds):
        medians = {}
        for mode in ("off", "on") if index % 2 else ("on", "off"):
            medians[mode] = _one_at_a_time(ports[mode], key, requests)
        pings.append(ping())
        added.append((medians["on"] - medians["off"], pings[-1]))
    return {
        "added_ms": statistics.median(a for a, _ in added),
        "added_x_ping": statistics.median(a / p for a, p in added if p),
        "ping_ms": statistics.median(pings),
        "added_rounds": added,
    }


def _ping(redis_url: str, times: int = 200) -> Callable[[], float]:
    """Median milliseconds of `times` PINGs from this process, on a client kept open."""
    from quotas.engine import connect

    client = connect(redis_url)

    def measure() -> float:
        samples = []
        for _ in range(times):
            start = time.perf_counter_ns()
            client.ping()
            samples.append(time.perf_counter_ns() - start)
        return statistics.median(samples) / 1e6

    return measure
