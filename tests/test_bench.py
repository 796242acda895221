"""The benchmark harness still runs: tiny counts, figures produced, none judged but ours' exactness.

Nothing here asserts anything about time.
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("limits")
pytest.importorskip("django_ratelimit")
pytest.importorskip("matplotlib")

from bench import decision, e2e, exactness, memory, report, streams, targets
from bench.__main__ import meta
from bench.limiters import NAMES, OURS, OURS_TIER, RATELIMIT_CACHE, cache_settings
from quotas.engine import connect


def quiet(line: str) -> None:
    pass


@pytest.fixture
def bench_redis(real_redis, settings):
    """The suite's Redis, with the peers' caches on it as `bench.settings` has them."""
    settings.CACHES = {**settings.CACHES, **cache_settings(real_redis)}
    settings.RATELIMIT_USE_CACHE = RATELIMIT_CACHE
    return real_redis


def test_decision_cost_and_memory_figures_and_report(bench_redis, tmp_path):
    client = connect(bench_redis)
    results = {"meta": meta(bench_redis, client)}
    results["decision"] = decision.run(
        bench_redis, sizes=(10, 1_000), count=20, rounds=2, warmup=2, budget=600.0, log=quiet
    )
    results["memory"] = memory.run(bench_redis, sizes=(10,), users=2, requests=3, log=quiet)
    results["meta"]["load_after"] = "-"
    results["targets"] = targets.check(results)
    report.write(results, tmp_path)

    rows = {(row["series"], row["limit"]): row for row in results["decision"]}
    assert set(rows) == {(name, size) for name in decision.SERIES for size in (10, 1_000)}
    assert all(row["n"] == 20 and row["median_us"] > 0 for row in rows.values())
    # 20 decisions against 10 per window (a day for the full tier): exactly 10 admitted.
    assert rows[(OURS, 10)]["admitted"] == 10
    assert rows[(decision.TIER_RESERVE, 10)]["admitted"] == 10
    assert [row["limiter"] for row in results["memory"]] == list(NAMES)
    assert all(row["bytes_per_user"] > 0 for row in results["memory"])

    assert "## Targets" in (tmp_path / "results.md").read_text()
    assert json.loads((tmp_path / "results.json").read_text())["decision"]
    assert (tmp_path / "decision_cost.png").stat().st_size > 0
    assert (tmp_path / "memory.png").stat().st_size > 0


@pytest.mark.slow
def test_ours_admits_exactly_the_limit_under_contention(bench_redis):
    rows = exactness.run(bench_redis, limit=5, processes=2, threads=2, attempts=4, log=quiet)

    admitted = {row["limiter"]: row["admitted"] for row in rows}
    assert set(admitted) == set(NAMES)
    assert admitted[OURS] == 5
    assert admitted[OURS_TIER] == 5


@pytest.mark.slow
def test_end_to_end_figures(bench_redis):
    result = e2e.run(bench_redis, requests=8, concurrency=2, rounds=2, log=quiet)
    if "skipped" in result:
        pytest.skip(f"e2e bench skipped: {result['skipped'][:300]}")

    assert result["on"]["ok"] > 0
    assert result["off"]["ok"] > 0
    assert len(result["cost_percent_rounds"]) == 2  # one paired figure per round
    low, high = result["cost_percent_rounds"]
    assert low <= result["cost_percent"] <= high


@pytest.mark.slow
def test_concurrent_streams_figures(bench_redis, tmp_path):
    result = streams.run(bench_redis, sizes=(4,), first=0.2, chunks=4, seconds=0.4, log=quiet)
    if "skipped" in result:
        pytest.skip(f"streams bench skipped: {result['skipped'][:300]}")

    rows = {row["server"]: row for row in result["rows"]}
    assert set(rows) == {"uvicorn", "gunicorn", "passthrough"}
    assert all(row["completed"] == 4 and row["errors"] == 0 for row in rows.values())
    assert all(row["rss_mib"] > 0 for row in rows.values())
    for server in ("uvicorn", "gunicorn"):
        assert rows[server]["leases_held_after"] == 0
        assert rows[server]["ledger_tokens"] == rows[server]["reported_tokens"] > 0
    results = {"meta": {"command": "-", "date": "-", "machine": "-", "redis": "-"}}
    results["meta"].update(redis_url="-", load_before="-", load_after="-", versions="-")
    results["streams"] = result
    results["targets"] = targets.check(results)
    report.write(results, tmp_path)
    assert "Concurrent slow streams" in (tmp_path / "results.md").read_text()


@pytest.mark.django_db
def test_dashboard_figures_and_report(bench_redis, tmp_path):
    from bench import dashboard

    result = dashboard.run(bench_redis, users=30, rows=300, rounds=2, own_database=False, log=quiet)

    assert (result["users"], result["rows"]) == (31, 300)  # and the superuser
    assert [page["page"] for page in result["pages"]] == list(dashboard.PAGES)
    assert all(page["status"] == 200 and page["queries"] <= 15 for page in result["pages"])
    results = {"meta": {"command": "-", "date": "-", "machine": "-", "redis": "-"}}
    results["meta"].update(redis_url="-", load_before="-", load_after="-", versions="-")
    results["dashboard"] = result
    results["targets"] = targets.check(results)
    assert [t["met"] for t in results["targets"]][-2:] == [None, None]  # too small to judge
    report.write(results, tmp_path)
    assert "The admin's usage dashboard" in (tmp_path / "results.md").read_text()
