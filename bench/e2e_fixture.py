"""`python -m bench.e2e_fixture`: migrate the e2e database and print a fresh API key;
`python -m bench.e2e_fixture ledger`: print the bench user's settled tokens in the ledger.

The key's user is on a full tier (every limit set) far above what the run sends, so each
request goes through the whole quota path and none is refused.
"""

from __future__ import annotations

from decimal import Decimal

MODEL = "gpt-4o-mini"
BENCH_TIER = {
    "name": "Bench",
    "requests_per_minute": 1_000_000,
    "burst": 1_000_000,
    "requests_per_day": 100_000_000,
    "tokens_per_day": 10**12,
    "tokens_per_month": 10**13,
    "spend_per_month": Decimal(1_000_000),
    "max_tokens_per_request": 4_096,
    "max_concurrent_requests": 10_000,
}


def main() -> None:
    import sys

    import django

    django.setup()
    if sys.argv[1:] == ["ledger"]:
        print(ledger_tokens())
        return
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from quotas.models import AIModel, APIKey, Tier, UserQuota

    call_command("migrate", verbosity=0, interactive=False)
    # No provider limits on the model: the run measures the callers' quotas.
    model, _ = AIModel.objects.update_or_create(
        name=MODEL,
        defaults={
            "input_price_per_million": Decimal("0.15"),
            "output_price_per_million": Decimal("0.60"),
            "upstream_requests_per_minute": None,
            "upstream_tokens_per_minute": None,
        },
    )
    tier, _ = Tier.objects.update_or_create(slug="bench", defaults=BENCH_TIER)
    tier.allowed_models.set([model])
    tier.default_model = model
    tier.save()
    user, _ = get_user_model().objects.get_or_create(username="bench")
    UserQuota.objects.update_or_create(user=user, defaults={"tier": tier})
    _, key = APIKey.objects.create_key(user=user, name="bench")
    print(key)


def ledger_tokens() -> int:
    from django.db.models import Sum

    from quotas.models import UsageRecord

    totals = UsageRecord.objects.filter(user__username="bench").aggregate(
        prompt=Sum("prompt_tokens"), completion=Sum("completion_tokens")
    )
    return (totals["prompt"] or 0) + (totals["completion"] or 0)


if __name__ == "__main__":
    main()
