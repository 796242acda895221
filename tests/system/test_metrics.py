"""/metrics scraped from a gunicorn with two worker processes: every scrape, whichever
worker answers it, shows the figures of both (PROMETHEUS_MULTIPROC_DIR)."""

from __future__ import annotations

import re
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from django.db.models import Sum

from quotas.models import UsageRecord

from .conftest import ROOT, _servers
from .http import call

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def _two_workers(port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "quotaproject.wsgi:application",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        "2",
        "--threads",
        "4",
        "--worker-class",
        "gthread",
        "--timeout",
        "30",
        "--graceful-timeout",
        "2",
        "--chdir",
        str(ROOT),
    ]


def value(text: str, sample: str) -> float:
    match = re.search(rf"^{re.escape(sample)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def test_metrics_add_up_over_two_worker_processes(
    real_redis, server_database_url, tier_user, tmp_path: Path
) -> None:
    user, key = tier_user(requests_per_day=15)
    start, started = _servers(server_database_url, _two_workers)
    try:
        (server,) = start(real_redis, count=1, PROMETHEUS_MULTIPROC_DIR=str(tmp_path))
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}
        headers = {"Authorization": f"Bearer {key}"}

        def one(_: Any) -> int:
            url = f"{server}/v1/chat/completions"
            return call(url, json=body, headers=headers)[0]

        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(one, range(20)))
        assert (statuses.count(200), statuses.count(429)) == (15, 5)

        pids = {p.stem.rpartition("_")[2] for p in tmp_path.glob("histogram_*.db")}
        assert len(pids) == 2  # both workers write their own figures
        tokens = UsageRecord.objects.filter(user=user).aggregate(
            t=Sum("prompt_tokens") + Sum("completion_tokens")
        )["t"]
        for _ in range(6):  # each scrape may be answered by either worker
            status, _, page = call(f"{server}/metrics")
            text = page.decode()
            assert status == 200
            assert value(text, 'quotas_decisions_total{limit="",outcome="allowed"}') == 15
            denied = 'quotas_decisions_total{limit="requests_per_day",outcome="denied"}'
            assert value(text, denied) == 5
            model = 'quotas_tokens_total{model="gpt-4o-mini",tier="' + user.quota.tier.slug + '"}'
            assert value(text, model) == tokens
            assert value(text, "quotas_decision_seconds_count") == 20
            assert value(text, "quotas_ledger_mode") == 0
    finally:
        for process in started:
            process.stop()
