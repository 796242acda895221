"""The admin's usage dashboard on a seeded ledger: time and SQL queries per page.

Seeds `users` users on three tiers and ten teams, `rows` ledger rows spread over the last
90 days and three models (bulk inserts), keys with limits of their own, and boosts; then
asks for the dashboard as a logged-in superuser. Cold: the first request of the process
(templates, caches and the database connection new); warm: the median of `rounds` more.
Run by `python -m bench` in a database of its own, created and dropped for the run.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any

USERS = 5_000
ROWS = 500_000
ROUNDS = 15
MODELS = ("gpt-4o-mini", "gpt-4o", "o3-mini")
DAYS = 90
BATCH = 20_000
PAGES = {
    "default (by highest %)": "",
    "sorted by tokens today, over only": "?sort=-tokens_per_day&state=over",
    "page 40, by spend this month": "?sort=-spend_per_month_used&page=40",
    "a 90-day range": "?from={from90}",
}


def seed(users: int, rows: int) -> dict[str, Any]:
    """A ledger of `rows` rows over `users` users; returns what it holds."""
    from django.contrib.auth import get_user_model
    from django.db import connection

    from quotas.ledger import today
    from quotas.models import (
        APIKey,
        LevelUsage,
        QuotaAdjustment,
        Team,
        Tier,
        UsageRecord,
        UserQuota,
    )

    User = get_user_model()
    day, _, _ = today()
    Tier.objects.update(is_default=False)
    tiers = [
        Tier.objects.create(
            slug=f"bench-{n}",
            name=f"Bench {n}",
            is_default=n == 0,
            requests_per_day=200 * (n + 1),
            tokens_per_day=40_000 * (n + 1),
            tokens_per_month=600_000 * (n + 1),
            spend_per_month=Decimal(5 * (n + 1)),
        )
        for n in range(3)
    ]
    teams = Team.objects.bulk_create(Team(slug=f"bench-{n}", name=f"Team {n}") for n in range(10))
    people = User.objects.bulk_create(
        User(username=f"bench{n:06}", email=f"bench{n}@example.com") for n in range(users)
    )
    UserQuota.objects.bulk_create(
        UserQuota(user=u, tier=tiers[n % 3], team=teams[n % 10] if n % 4 == 0 else None)
        for n, u in enumerate(people)
    )
    per_user = max(1, rows // max(1, users))
    # about one row a day over DAYS days, the models taking turns
    cells = [(k * DAYS // per_user, MODELS[k % len(MODELS)]) for k in range(per_user)]
    batch: list[Any] = []
    written = 0
    for n, user in enumerate(people):
        heavy = 1 + (n % 7)  # some users far heavier than others
        for back, model in cells:
            tokens = 50 * heavy * (1 + (n + back) % 13) * (3 if back == 0 else 1)
            batch.append(
                UsageRecord(
                    user=user,
                    day=day - timedelta(days=back),
                    model=model,
                    requests=1 + (n + back) % 9,
                    prompt_tokens=tokens * 2 // 3,
                    completion_tokens=tokens // 3,
                    cost=Decimal(tokens) * Decimal("0.0000006"),
                    denied=(n + back) % 17 == 0,
                )
            )
            if len(batch) >= BATCH:
                UsageRecord.objects.bulk_create(batch)
                written += len(batch)
                batch = []
    UsageRecord.objects.bulk_create(batch)
    written += len(batch)
    keys = [
        APIKey.objects.create_key(user=u, name="bench", tokens_per_day=10_000)[0]
        for u in people[:20]
    ]
    LevelUsage.objects.bulk_create(
        LevelUsage(level=f"k:{k.pk}", day=day, model=MODELS[0], requests=5, prompt_tokens=500)
        for k in keys
    )
    QuotaAdjustment.objects.bulk_create(
        QuotaAdjustment(user=u, day=day, kind=QuotaAdjustment.BOOST, tokens=1_000)
        for u in people[:50]
    )
    admin = User.objects.create_superuser("bench-admin", "admin@example.com", "bench")
    if connection.vendor == "postgresql":  # the statistics a long-lived table has
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
    return {"users": users + 1, "rows": written, "admin": admin}


def _get(client: Any, url: str) -> tuple[float, int, int]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        started = time.perf_counter()
        response = client.get(url)
        elapsed = time.perf_counter() - started
    return elapsed * 1000, len(queries), response.status_code


def measure(admin: Any, rounds: int) -> list[dict[str, Any]]:
    """Without collected static files: the pages' links to them are plain."""
    from django.conf import settings
    from django.test import override_settings

    plain = {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}
    hosts = [*settings.ALLOWED_HOSTS, "testserver"]  # the test client's
    with override_settings(
        STORAGES={**settings.STORAGES, "staticfiles": plain}, ALLOWED_HOSTS=hosts
    ):
        return _pages(admin, rounds)


def _pages(admin: Any, rounds: int) -> list[dict[str, Any]]:
    from django.db import connection
    from django.test import Client
    from django.urls import reverse

    from quotas import policy
    from quotas.ledger import today

    base = reverse("admin:quotas_dashboard")
    from90 = (today()[0] - timedelta(days=89)).isoformat()
    client = Client()
    client.force_login(admin)
    out = []
    for name, query in PAGES.items():
        url = base + query.format(from90=from90)
        policy.cache.clear()
        if not connection.in_atomic_block:  # (a test's transaction stays open)
            connection.close()  # a new connection, as a new worker process has
        cold, queries, status = _get(client, url)
        warm = [_get(client, url)[0] for _ in range(rounds)]
        out.append(
            {
                "page": name,
                "status": status,
                "queries": queries,
                "cold_ms": round(cold, 1),
                "warm_median_ms": round(statistics.median(warm), 1),
                "warm_max_ms": round(max(warm), 1),
            }
        )
    return out


def run(
    redis_url: str,
    *,
    users: int = USERS,
    rows: int = ROWS,
    rounds: int = ROUNDS,
    own_database: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Seed, then measure each page of PAGES; `own_database=False`: the one in use."""
    from django.db import connection

    original = connection.settings_dict["NAME"]
    if own_database:  # the test database's name: do not run the suite meanwhile
        connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    try:
        started = time.monotonic()
        seeded = seed(users, rows)
        log(
            f"  seeded {seeded['users']:,} users, {seeded['rows']:,} ledger rows "
            f"in {time.monotonic() - started:.0f} s"
        )
        pages = measure(seeded["admin"], rounds)
        for page in pages:
            log(
                f"  {page['page']}: cold {page['cold_ms']:.0f} ms, warm median "
                f"{page['warm_median_ms']:.0f} ms, {page['queries']} queries"
            )
        return {
            "users": seeded["users"],
            "rows": seeded["rows"],
            "database": connection.vendor,
            "rounds": rounds,
            "pages": pages,
        }
    finally:
        if own_database:
            connection.creation.destroy_test_db(original, verbosity=0)
