"""quota_reconcile at scale: seconds and SQL queries to check N users with ledger rows today.

    DATABASE_URL=postgres://... python -m bench.reconcile [N] [REDIS_URL]

Makes N users named `bench-reconcile-<i>` with one ledger row each today (removed at the
end), runs the command once to seed their counters, then times a second run.
"""

from __future__ import annotations

import sys
import time
from io import StringIO

from . import DEFAULT_REDIS_URL
from .django_env import configure

PREFIX = "bench-reconcile-"


def main(count: int, redis_url: str) -> dict[str, float]:
    configure(redis_url)
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from quotas.models import UsageRecord

    User = get_user_model()
    User.objects.filter(username__startswith=PREFIX).delete()
    User.objects.bulk_create(User(username=f"{PREFIX}{i}") for i in range(count))
    users = User.objects.filter(username__startswith=PREFIX)
    today = timezone.localdate()
    UsageRecord.objects.bulk_create(
        UsageRecord(user=user, day=today, model="gpt-4o-mini", requests=1, prompt_tokens=10)
        for user in users
    )
    try:
        call_command("quota_reconcile", "--no-progress", stdout=StringIO())  # seeds
        out = StringIO()
        with CaptureQueriesContext(connection) as queries:
            started = time.perf_counter()
            call_command("quota_reconcile", "--no-progress", stdout=out)
            seconds = time.perf_counter() - started
        print(out.getvalue().strip())
        print(f"{count} users: {seconds:.2f} s, {len(queries)} SQL queries")
        return {"users": count, "seconds": seconds, "queries": len(queries)}
    finally:
        users.delete()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5_000, *(sys.argv[2:3] or [DEFAULT_REDIS_URL]))
