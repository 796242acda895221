"""PNG plots of the results (matplotlib, Agg backend)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from .decision import MINIMAL_FLOOR, PING, SCRIPT_FLOOR, SERIES, TIER_RESERVE, TIER_SETTLED
from .limiters import (
    DRF,
    LIMITS_FIXED,
    LIMITS_MOVING,
    LIMITS_SLIDING,
    NAMES,
    OURS,
    OURS_TIER,
    RATELIMIT,
)
from .targets import MEMORY_BYTES
from .throttles import CHAT, LIMITS_CHAT, LIMITS_THROTTLE, THROTTLE

# One colour per limiter in every plot; ours drawn thick with round markers.
COLORS = {
    PING: "black",
    SCRIPT_FLOOR: "dimgray",
    OURS: "tab:blue",
    OURS_TIER: "tab:orange",
    TIER_RESERVE: "tab:orange",
    TIER_SETTLED: "tab:orange",
    DRF: "tab:green",
    LIMITS_FIXED: "tab:red",
    LIMITS_MOVING: "tab:purple",
    LIMITS_SLIDING: "tab:pink",
    RATELIMIT: "tab:gray",
    MINIMAL_FLOOR: "silver",
    THROTTLE: "tab:cyan",
    CHAT: "tab:brown",
    LIMITS_THROTTLE: "tab:olive",
    LIMITS_CHAT: "gold",
}


def _style(name: str) -> dict[str, Any]:
    style: dict[str, Any] = {"color": COLORS[name]}
    if name in (PING, SCRIPT_FLOOR, MINIMAL_FLOOR):
        return {**style, "linestyle": "--" if name == PING else ":", "linewidth": 1.5}
    if name.startswith("ours"):
        dashed = {"linestyle": "-."} if name == TIER_SETTLED else {}
        return {**style, "linewidth": 2.6, "marker": "o", **dashed}
    return {**style, "linewidth": 1.4, "marker": "s", "alpha": 0.85}


def _finite(values: list[float]) -> list[float]:
    return [v if v is not None and not math.isnan(v) else float("nan") for v in values]


def decision(rows: list[dict[str, Any]], path: Path) -> None:
    sizes = sorted({row["limit"] for row in rows})
    found = {(row["series"], row["limit"]): row for row in rows}
    fig, axes = plt.subplots(1, 2, figsize=(14, 6), sharey=True)
    for ax, field, title in ((axes[0], "median_us", "median"), (axes[1], "p99_us", "p99")):
        for name in SERIES:
            values = _finite([found[(name, s)][field] for s in sizes if (name, s) in found])
            ax.plot(sizes[: len(values)], values, label=name, **_style(name))
        ax.set(xscale="log", yscale="log", xticks=sizes, title=f"Decision cost, {title}")
        ax.set_xticklabels([f"{s:,}" for s in sizes])
        ax.set_xlabel("limit per window")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("microseconds per decision (log)")
    axes[1].legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def memory(rows: list[dict[str, Any]], path: Path) -> None:
    sizes = sorted({row["limit"] for row in rows})
    found = {(row["limiter"], row["limit"]): row for row in rows}
    fig, axes = plt.subplots(1, 2, figsize=(14, 6), sharey=True)
    fields = (("bytes_per_user", "active user (min(limit, 200) requests)"),)
    fields += (("bytes_at_limit", "user at the limit"),)
    for ax, (field, title) in zip(axes, fields, strict=True):
        for name in NAMES:
            values = [found[(name, s)][field] for s in sizes if (name, s) in found]
            ax.plot(sizes[: len(values)], values, label=name, **_style(name))
        ax.axhline(MEMORY_BYTES, color="red", linestyle=":", label="1 KB target")
        ax.set(xscale="log", yscale="log", xticks=sizes, title=f"Redis memory, {title}")
        ax.set_xticklabels([f"{s:,}" for s in sizes])
        ax.set_xlabel("limit per window")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("bytes per user (log)")
    axes[1].legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def exactness(rows: list[dict[str, Any]], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(10, 4.5))
    names = [row["limiter"] for row in rows][::-1]
    admitted = [row["admitted"] for row in rows][::-1]
    colors = ["tab:green" if row["over"] == 0 else "tab:red" for row in rows][::-1]
    bars = ax.barh(names, admitted, color=colors)
    ax.bar_label(bars, padding=3)
    ax.set_xlim(0, max(admitted) * 1.1)
    limit = rows[0]["limit"]
    ax.axvline(limit, color="black", linestyle="--", label=f"limit {limit}")
    ax.set_xlabel(f"admitted of {rows[0]['attempts']} concurrent attempts")
    ax.set_title("Exactness under contention (green: exact)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def e2e(result: dict[str, Any], path: Path) -> None:
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    modes = ("off", "on")
    labels = ["quotas off", "quotas on"]
    bars = left.bar(labels, [result[m]["rps"] for m in modes], color=["tab:gray", "tab:blue"])
    left.bar_label(bars, fmt="%.1f", padding=3)
    left.margins(y=0.12)
    left.set(title="Throughput", ylabel="requests per second")
    width = 0.38
    for offset, field, name in ((-width / 2, "p50_ms", "p50"), (width / 2, "p99_ms", "p99")):
        xs = [i + offset for i in range(len(modes))]
        found = right.bar(xs, [result[m][field] for m in modes], width, label=name)
        right.bar_label(found, fmt="%.1f", padding=3)
    right.margins(y=0.12)
    right.set_xticks(range(len(modes)), labels)
    right.set(title="Latency", ylabel="milliseconds")
    right.legend()
    fig.suptitle(f"/v1/chat/completions end to end, {result['server']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def draw(results: dict[str, Any], out: Path) -> list[str]:
    """Write every plot the results allow; returns their names."""
    drawn = []
    if results.get("decision"):
        decision(results["decision"], out / "decision_cost.png")
        drawn.append("decision_cost")
    if results.get("exactness"):
        exactness(results["exactness"], out / "exactness.png")
        drawn.append("exactness")
    if results.get("memory"):
        memory(results["memory"], out / "memory.png")
        drawn.append("memory")
    e2e_result = results.get("e2e")
    if e2e_result and "skipped" not in e2e_result:
        e2e(e2e_result, out / "e2e.png")
        drawn.append("e2e")
    return drawn
