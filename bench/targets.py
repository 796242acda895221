"""The project's performance targets, each checked against the measured figures."""

from __future__ import annotations

from typing import Any

from .decision import MINIMAL_FLOOR, SCRIPT_FLOOR
from .limiters import OURS, OURS_TIER
from .throttles import CHAT, LIMITS_THROTTLE, THROTTLE

THROTTLE_RATIO = 1.45  # TierRateThrottle's decision against a bare PING round trip
CHAT_RATIO = 1.7  # the full chat reservation against PING
ADDED_RATIO = 3.0  # client-visible added latency of the quota path, in PINGs
FLAT_SPREAD = 1.2  # largest over smallest such ratio across limit sizes
MEMORY_BYTES = 1024  # per active user, full tier
STREAMS_N = 1_000
TTFT_RATIO = 2.0  # added time to first token, ours over the bare pass-through proxy's
RSS_MIB = 1024


def _row(rows: list[dict[str, Any]], key: str, name: str) -> list[dict[str, Any]]:
    return [row for row in rows if row[key] == name]


def _ratios(rows: list[dict[str, Any]]) -> str:
    return " / ".join(f"{row['x_ping']:.2f}x" for row in rows)


def _sizes(rows: list[dict[str, Any]]) -> str:
    return " / ".join(f"{row['limit']:,}" for row in rows)


DASHBOARD_USERS = 5_000
DASHBOARD_WARM_MS = 300
DASHBOARD_COLD_MS = 1_000
DASHBOARD_QUERIES = 15


def check(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One entry per target: what it asks, what was measured, and whether it was met."""
    out = []
    rows = results.get("decision", [])
    throttle = _row(rows, "series", THROTTLE)
    if throttle:
        ratios = [row["x_ping"] for row in throttle]
        peers = [row["x_ping"] for row in _row(rows, "series", LIMITS_THROTTLE)]
        floors = " / ".join(f"{row['x_ping']:.2f}x" for row in _row(rows, "series", MINIMAL_FLOOR))
        medians = " / ".join(f"{row['median_us']:.0f}" for row in throttle)
        measured = (
            f"{_ratios(throttle)} PING at limits {_sizes(throttle)} (medians "
            f"{medians} us); `limits` "
            f"doing the same 2 limits: {' / '.join(f'{r:.2f}x' for r in peers)}; the floor "
            f"(one minimal script): {floors}"
        )
        out.append(
            {
                "target": f"TierRateThrottle decision <= {THROTTLE_RATIO}x PING, and below "
                "`limits` doing the same limits",
                "measured": measured,
                "met": max(ratios) <= THROTTLE_RATIO
                and len(peers) == len(ratios)
                and all(r < p for r, p in zip(ratios, peers, strict=True)),
            }
        )
        spread = max(ratios) / min(ratios)
        out.append(
            {
                "target": f"... flat from limit 10 to 100,000 (largest / smallest ratio to "
                f"PING <= {FLAT_SPREAD})",
                "measured": f"{spread:.2f}",
                "met": spread <= FLAT_SPREAD,
            }
        )
    chat = _row(rows, "series", CHAT)
    if chat:
        floors = " / ".join(f"{row['x_ping']:.2f}x" for row in _row(rows, "series", SCRIPT_FLOOR))
        out.append(
            {
                "target": f"Full chat reservation <= {CHAT_RATIO}x PING",
                "measured": f"{_ratios(chat)} PING at limits {_sizes(chat)}; a script call "
                f"with the full tier's keys and arguments doing nothing: {floors}",
                "met": max(row["x_ping"] for row in chat) <= CHAT_RATIO,
            }
        )
    exact = [row for row in results.get("exactness", []) if row["limiter"] in (OURS, OURS_TIER)]
    if exact:
        limit = exact[0]["limit"]
        out.append(
            {
                "target": f"Exact admission {limit}/{limit} under contention",
                "measured": ", ".join(
                    f"{row['limiter']}: {row['admitted']}/{row['limit']} "
                    f"of {row['attempts']} attempts"
                    for row in exact
                ),
                "met": all(row["admitted"] == row["limit"] for row in exact),
            }
        )
    memory = _row(results.get("memory", []), "limiter", OURS_TIER)
    if memory:
        worst = max(max(row["bytes_per_user"], row["bytes_at_limit"]) for row in memory)
        out.append(
            {
                "target": f"<= {MEMORY_BYTES} B of Redis per active user, full tier",
                "measured": f"at most {worst:.0f} B (any limit size, active or at its limit)",
                "met": worst <= MEMORY_BYTES,
            }
        )
    e2e = results.get("e2e")
    if e2e is not None:
        if "skipped" in e2e:
            measured, met = "not measured: the e2e bench was skipped", None
        elif "added_x_ping" not in e2e:
            measured, met = "not measured", None
        else:
            measured = (
                f"{e2e['added_x_ping']:.2f}x PING ({e2e['added_ms'] * 1000:.0f} us added, "
                f"PING {e2e['ping_ms'] * 1000:.0f} us), median of paired rounds; throughput "
                f"cost {e2e['cost_percent']:.1f}% ({e2e['on']['rps']:.0f} req/s with quotas, "
                f"{e2e['off']['rps']:.0f} without)"
            )
            met = e2e["added_x_ping"] <= ADDED_RATIO
        out.append(
            {
                "target": f"Client-visible added latency of the quota path on a non-streamed "
                f"completion <= {ADDED_RATIO:.0f}x PING",
                "measured": measured,
                "met": met,
            }
        )
    out += _streams(results.get("streams"))
    out += _dashboard(results.get("dashboard"))
    return out


def _dashboard(dashboard: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The dashboard's targets, judged at full size only."""
    if dashboard is None:
        return []
    pages = dashboard["pages"]
    full = dashboard["users"] >= DASHBOARD_USERS
    size = f"{dashboard['users']:,} users, {dashboard['rows']:,} rows"
    warm = max(p["warm_median_ms"] for p in pages)
    cold = max(p["cold_ms"] for p in pages)
    queries = max(p["queries"] for p in pages)
    return [
        {
            "target": f"Dashboard at {DASHBOARD_USERS:,} users: warm < {DASHBOARD_WARM_MS} ms, "
            f"<= {DASHBOARD_QUERIES} queries",
            "measured": f"warm median up to {warm:,.0f} ms, {queries} queries ({size})",
            "met": (warm < DASHBOARD_WARM_MS and queries <= DASHBOARD_QUERIES) if full else None,
        },
        {
            "target": f"... cold < {DASHBOARD_COLD_MS:,} ms",
            "measured": f"up to {cold:,.0f} ms ({size})",
            "met": cold < DASHBOARD_COLD_MS if full else None,
        },
    ]


def _streams(streams: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The concurrent-streams targets, at N = STREAMS_N."""
    if streams is None:
        return []
    rows = (
        {}
        if "skipped" in streams
        else {row["server"]: row for row in streams["rows"] if row["n"] == STREAMS_N}
    )
    ours, floor = rows.get("uvicorn"), rows.get("passthrough")
    if ours is None or floor is None:
        skipped = {"measured": f"not measured at N = {STREAMS_N:,}", "met": None}
        names = ("exact", "TTFT", "RSS")
        return [
            {"target": f"{STREAMS_N:,} concurrent streams: {name}", **skipped} for name in names
        ]
    exact = (
        ours["errors"] == 0
        and ours["leases_held_after"] == 0
        and ours["ledger_tokens"] == ours["reported_tokens"]
    )
    ours_ms, floor_ms = ours["ttft_added_p50_ms"], floor["ttft_added_p50_ms"]
    ratio = ours_ms / floor_ms if floor_ms > 0 else None
    return [
        {
            "target": f"{STREAMS_N:,} concurrent streams under ASGI: 0 errors, every lease "
            "released, ledger = provider-reported usage",
            "measured": f"{ours['errors']} errors, {ours['leases_held_after']} leases held after, "
            f"ledger {ours['ledger_tokens']:,} / reported {ours['reported_tokens']:,} tokens",
            "met": exact,
        },
        {
            "target": f"Added time to first token at {STREAMS_N:,} streams: p50 <= "
            f"{TTFT_RATIO:g}x the bare pass-through proxy's",
            "measured": f"{ours_ms:,.0f} ms against {floor_ms:,.0f} ms"
            + (f" ({ratio:.2f}x)" if ratio is not None else ""),
            "met": None if ratio is None else ratio <= TTFT_RATIO,
        },
        {
            "target": f"Server RSS at {STREAMS_N:,} streams <= {RSS_MIB:,} MiB",
            "measured": f"{ours['rss_mib']:,.0f} MiB ({streams['servers']['uvicorn']})",
            "met": ours["rss_mib"] <= RSS_MIB,
        },
    ]
