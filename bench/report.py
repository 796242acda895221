"""results.json (raw figures), results.md (tables) and the plots."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from . import plots
from .decision import SERIES
from .limiters import NAMES

MET = {True: "yes", False: "**no**", None: "n/a"}


def _num(value: float | None, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}"


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _decision(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "## 1. Decision cost",
        "",
        "Microseconds per decision (`time.perf_counter_ns` around one call), the series "
        "interleaved in rounds. The measured user is first filled to `limit - calls / 2` "
        "admitted requests, so at 100,000 about half the timed decisions admit, against a "
        "log as long as the limit allows, and at 10 nearly all deny. `x PING`: the median "
        "over the median of a bare redis-py PING in the same round.",
    ]
    for size in sorted({row["limit"] for row in rows}):
        found = {row["series"]: row for row in rows if row["limit"] == size}
        table = [
            [
                name,
                f"{found[name]['admitted']:,} / {found[name]['n']:,}",
                _num(found[name]["median_us"]),
                _num(found[name]["p99_us"]),
                _num(found[name]["median_admitted_us"]),
                _num(found[name]["median_denied_us"]),
                _num(found[name]["x_ping"], 2),
            ]
            for name in SERIES
            if name in found
        ]
        head = ["series", "admitted / calls", "median us", "p99 us", "median admitted us"]
        head += ["median denied us", "x PING"]
        lines += ["", f"### Limit {size:,} per window", "", *_table(head, table)]
    return lines


def _exactness(rows: list[dict[str, Any]]) -> list[str]:
    table = [
        [
            row["limiter"],
            *(f"{row[k]}" for k in ("attempts", "limit", "admitted")),
            f"{row['over']:+d}",
        ]
        for row in rows
    ]
    return [
        "## 2. Exactness",
        "",
        f"Admitted requests for one user under {rows[0]['setup']} (spawned processes, "
        "released together by barriers; each process builds its own clients). Limits are "
        "per hour (ours, full tier: per day, with a rate far above it).",
        "",
        *_table(["limiter", "attempts", "limit", "admitted", "over"], table),
    ]


def _memory(rows: list[dict[str, Any]]) -> list[str]:
    sizes = sorted({row["limit"] for row in rows})
    found = {(row["limiter"], row["limit"]): row for row in rows}
    head = ["limiter"]
    for size in sizes:
        head += [f"{size:,}: active user", f"{size:,}: at the limit"]
    table = []
    for name in NAMES:
        line = [name]
        for size in sizes:
            row = found.get((name, size))
            line += [_num(row["bytes_per_user"]), _num(row["bytes_at_limit"])] if row else ["-"] * 2
        table.append(line)
    done = ", ".join(f"{found[(NAMES[0], s)]['requests_per_user']}" for s in sizes)
    return [
        "## 3. Memory",
        "",
        "Redis bytes per user: `MEMORY USAGE key SAMPLES 0` summed over the user's keys "
        f"(SCAN by pattern; ours: `engine.subject_keys`). Active user: the mean over users "
        f"after {done} requests each (min(limit, 200)); at the limit: one user after as many "
        "admitted requests as the limit allows.",
        "",
        *_table(head, table),
    ]


def _e2e(e2e: dict[str, Any]) -> list[str]:
    lines = ["## 4. End to end", ""]
    if "skipped" in e2e:
        return [*lines, f"Skipped: {e2e['skipped']}"]
    table = [
        [
            f"quotas {mode}",
            f"{e2e[mode]['ok']:,} / {e2e[mode]['requests']:,}",
            _num(e2e[mode]["rps"], 1),
            _num(e2e[mode]["p50_ms"], 1),
            _num(e2e[mode]["p99_ms"], 1),
        ]
        for mode in ("off", "on")
    ]
    return [
        *lines,
        f"POST /v1/chat/completions, mock provider at zero latency, {e2e['server']}, "
        f"{e2e['database']} database, {e2e['concurrency']} keep-alive client threads, "
        f"the two servers alternating in {e2e.get('rounds', '')} rounds. Enforcement cost: "
        f"**{_num(e2e['cost_percent'], 1)}%** of throughput, the median over the rounds of "
        f"1 - (req/s on) / (req/s off) in the same round"
        + (
            f" (each round: {', '.join(_num(c, 1) for c in e2e['cost_percent_rounds'])}; "
            f"over all requests: {_num(e2e['cost_percent_pooled'], 1)}%)."
            if "cost_percent_rounds" in e2e
            else "."
        ),
        "",
        *_table(["", "200 OK / sent", "req/s", "p50 ms", "p99 ms"], table),
    ]


def _streams(streams: dict[str, Any]) -> list[str]:
    lines = ["## 5. Concurrent slow streams", ""]
    if "skipped" in streams:
        return [*lines, f"Skipped: {streams['skipped']}"]
    mock = streams["mock"]
    table = [
        [
            f"{row['n']:,}",
            streams["servers"][row["server"]],
            f"{row['completed']:,}",
            f"{row['errors']:,}",
            f"{_num(row['ttft_added_p50_ms'])} / {_num(row['ttft_added_p99_ms'])}",
            _num(row["rss_mib"]),
            str(row.get("leases_held_after", "-")),
            f"{row['ledger_tokens']:,} / {row['reported_tokens']:,}"
            if "ledger_tokens" in row
            else "-",
            str(row.get("ledger_mode_decisions", "-")),
        ]
        for row in streams["rows"]
    ]
    head = ["N", "server", "completed", "errors", "TTFT added p50 / p99 ms", "RSS MiB"]
    head += ["leases held after", "ledger / reported tokens", "ledger-mode decisions"]
    return [
        *lines,
        f"N streamed chat requests at once from one asyncio client; the mock provider waits "
        f"{mock['first_token_s']:g} s before the first token, then sends {mock['chunks']} "
        f"chunks over {mock['stream_s']:g} s. TTFT added: the time to the first event less "
        f"the mock's own wait. RSS: the peak over the server's processes. "
        f"{streams['database']} database. The WSGI server runs up to N = "
        f"{streams['wsgi_limit']:,}.",
        "",
        *_table(head, table),
    ]


def _dashboard(dashboard: dict[str, Any]) -> list[str]:
    table = [
        [
            page["page"],
            f"{page['cold_ms']:,.0f}",
            f"{page['warm_median_ms']:,.0f}",
            f"{page['warm_max_ms']:,.0f}",
            str(page["queries"]),
        ]
        for page in dashboard["pages"]
    ]
    return [
        "## 6. The admin's usage dashboard",
        "",
        f"{dashboard['users']:,} users and {dashboard['rows']:,} ledger rows on "
        f"{dashboard['database']}; a superuser's request through Django's test client. Cold: "
        f"the first request on a new database connection with the quota cache empty; warm: "
        f"{dashboard['rounds']} more.",
        "",
        *_table(["page", "cold ms", "warm median ms", "warm max ms", "SQL queries"], table),
    ]


def markdown(results: dict[str, Any]) -> str:
    meta = results["meta"]
    lines = [
        "# Benchmarks: django-ai-quotas against its peers",
        "",
        f"`{meta['command']}` on {meta['date']}: {meta['machine']}; Redis {meta['redis']} "
        + ("(a private redis-server started for the run)" if meta.get("private_redis") else "")
        + f" at {meta['redis_url']}; load average {meta['load_before']} before, "
        f"{meta['load_after']} after. {meta['versions']}.",
        "",
        "## Targets",
        "",
        *_table(
            ["target", "measured", "met"],
            [[t["target"], t["measured"], MET[t["met"]]] for t in results["targets"]],
        ),
    ]
    if results.get("decision"):
        lines += ["", *_decision(results["decision"])]
    if results.get("exactness"):
        lines += ["", *_exactness(results["exactness"])]
    if results.get("memory"):
        lines += ["", *_memory(results["memory"])]
    if results.get("e2e") is not None:
        lines += ["", *_e2e(results["e2e"])]
    if results.get("streams") is not None:
        lines += ["", *_streams(results["streams"])]
    if results.get("dashboard") is not None:
        lines += ["", *_dashboard(results["dashboard"])]
    pictures = [f"![{name}]({name}.png)" for name in results.get("plots", [])]
    if pictures:
        lines += ["", "## Plots", "", *pictures]
    return "\n".join(lines) + "\n"


def _plain(value: Any) -> Any:
    """JSON has no NaN: a figure that could not be measured is null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def write(results: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    results["plots"] = plots.draw(results, out)
    raw = json.dumps(_plain(results), indent=2, default=str, allow_nan=False)
    (out / "results.json").write_text(raw + "\n")
    (out / "results.md").write_text(markdown(results))
