from decimal import Decimal

from django.db import migrations


def create_default_tier(apps, schema_editor):
    Tier = apps.get_model("quotas", "Tier")
    if Tier.objects.filter(is_default=True).exists():
        return
    Tier.objects.update_or_create(
        slug="default",
        defaults={
            "name": "Default",
            "requests_per_minute": 60,
            "burst": 10,
            "requests_per_day": 1000,
            "tokens_per_day": 200_000,
            "tokens_per_month": 2_000_000,
            "spend_per_month": Decimal("10"),
            "max_tokens_per_request": 4096,
            "max_concurrent_requests": 4,
            "degrade_at_percent": 10,
            "is_default": True,
        },
    )


class Migration(migrations.Migration):
    dependencies = [("quotas", "0001_initial")]

    operations = [migrations.RunPython(create_default_tier, migrations.RunPython.noop)]
