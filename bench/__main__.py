"""`python -m bench`: run every benchmark and write bench/results/."""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

OUT = Path(__file__).resolve().parent / "results"
PEERS = ("django", "djangorestframework", "django-redis", "limits", "django-ratelimit", "redis")
SECTIONS = ("decision", "exactness", "memory", "e2e", "streams", "dashboard")

# Tiny counts for a quick check that everything runs; the figures mean nothing.
QUICK = {
    "decision": {"count": 40, "rounds": 2, "warmup": 5, "budget": 5.0},
    "exactness": {"processes": 2, "threads": 2, "attempts": 5, "limit": 5},
    "memory": {"users": 2, "requests": 5},
    "e2e": {"requests": 40, "rounds": 2, "latency_requests": 10},
    "streams": {"sizes": (5,), "first": 0.2, "chunks": 5, "seconds": 0.5},
    "dashboard": {"users": 30, "rows": 300, "rounds": 2},
}


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def meta(redis_url: str, client: Any) -> dict[str, Any]:
    versions = []
    for name in PEERS:
        try:
            versions.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{name} (not installed)")
    return {
        "command": " ".join(["python -m bench", *sys.argv[1:]]),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}",
        "redis": client.info("server")["redis_version"],
        "redis_url": redis_url,
        "versions": ", ".join(versions),
        "load_before": _load(),
    }


def dedicated(redis_url: str) -> bool:
    """The bench flushes its database: never let that be database 0."""
    path = urlsplit(redis_url).path.strip("/")
    return path.isdigit() and int(path) != 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("BENCH_REDIS_URL"),
        help="a dedicated database of an existing Redis, flushed by the run "
        "(default: a private redis-server started for the run)",
    )
    parser.add_argument("--out", type=Path, default=OUT, help="default: %(default)s")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--quick", action="store_true", help="tiny counts, to check it runs")
    args = parser.parse_args(argv)
    if args.redis_url is not None:
        if not dedicated(args.redis_url):
            parser.error("--redis-url must name a database other than 0 (it is flushed).")
        return run(args.redis_url, args)
    from .server import private_redis

    with private_redis() as url:
        print(f"Private redis-server at {url}", flush=True)
        return run(url, args)


def run(redis_url: str, args: argparse.Namespace) -> int:
    from quotas.engine import connect

    from . import dashboard, decision, e2e, exactness, memory, report, streams, targets
    from .django_env import configure

    configure(redis_url)
    client = connect(redis_url)
    try:
        client.ping()
    except Exception as exc:
        print(f"Redis at {redis_url} is unreachable: {exc}", file=sys.stderr)
        return 2
    runners = {"decision": decision.run, "exactness": exactness.run, "memory": memory.run}
    runners["e2e"] = e2e.run
    runners["streams"] = streams.run
    runners["dashboard"] = dashboard.run
    results: dict[str, Any] = {"meta": meta(redis_url, client), "seconds": {}}
    results["meta"]["private_redis"] = args.redis_url is None
    for section in args.only:
        client.flushdb()
        print(f"{section}:", flush=True)
        started = time.monotonic()
        options = QUICK[section] if args.quick else {}
        results[section] = runners[section](redis_url, log=_log, **options)
        results["seconds"][section] = round(time.monotonic() - started, 1)
    client.flushdb()
    results["meta"]["load_after"] = _load()
    results["targets"] = targets.check(results)
    report.write(results, args.out)
    print(f"Wrote {args.out}/results.md, results.json and the plots.")
    for target in results["targets"]:
        met = {True: "met", False: "NOT MET", None: "n/a"}[target["met"]]
        print(f"  {met:>7}  {target['target']}: {target['measured']}")
    return 0


def _log(line: str) -> None:
    print(line, flush=True)


if __name__ == "__main__":
    sys.exit(main())
