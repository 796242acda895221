from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from quotas.models import AIModel, APIKey, Tier, UserQuota

MODELS = [
    # name, USD per 1M prompt tokens, per 1M cached prompt tokens, per 1M completion
    # tokens, upstream rpm, tpm
    ("gpt-4o-mini", "0.15", "0.075", "0.60", 5000, 2_000_000),
    ("gpt-4o", "2.50", "1.25", "10.00", 1000, 500_000),
    ("gpt-4.1-nano", "0.10", "0.025", "0.40", 5000, 2_000_000),
    ("text-embedding-3-small", "0.02", None, "0", 3000, 1_000_000),
]

TIERS = {
    "free": {
        "name": "Free",
        "requests_per_minute": 10,
        "burst": 5,
        "requests_per_day": 200,
        "tokens_per_day": 20_000,
        "tokens_per_month": 200_000,
        "spend_per_month": Decimal("1"),
        "max_tokens_per_request": 512,
        "max_concurrent_requests": 2,
        "degrade_at_percent": 20,
    },
    "pro": {
        "name": "Pro",
        "requests_per_minute": 120,
        "burst": 20,
        "requests_per_day": 5000,
        "tokens_per_day": 1_000_000,
        "tokens_per_month": 20_000_000,
        "spend_per_month": Decimal("100"),
        "max_tokens_per_request": 4096,
        "max_concurrent_requests": 8,
        "degrade_at_percent": 10,
    },
}


class Command(BaseCommand):
    help = "Load demo models, tiers, an admin and a demo user, and print a new demo API key."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--force",
            action="store_true",
            help="Load the demo data even with DEBUG off (it creates a known admin login).",
        )
        parser.add_argument(
            "--key-file",
            type=Path,
            help="Keep the demo key in this file and reuse it while it is valid, so that it "
            "survives restarts (without: a new key each run, the previous one revoked).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.DEBUG and not options["force"]:
            raise CommandError(
                "seed_demo creates an admin login with a known password; with DEBUG off it "
                "refuses. Run it with DJANGO_DEBUG=1 (development), or pass --force."
            )
        models = {}
        for name, price_in, price_cached, price_out, rpm, tpm in MODELS:
            models[name], _ = AIModel.objects.update_or_create(
                name=name,
                defaults={
                    "input_price_per_million": Decimal(price_in),
                    "cached_input_price_per_million": price_cached and Decimal(price_cached),
                    "output_price_per_million": Decimal(price_out),
                    "upstream_requests_per_minute": rpm,
                    "upstream_tokens_per_minute": tpm,
                },
            )
        for slug, values in TIERS.items():
            tier, _ = Tier.objects.update_or_create(slug=slug, defaults=values)
            allowed = ["gpt-4o-mini", "gpt-4.1-nano", "text-embedding-3-small"]
            allowed += ["gpt-4o"] if slug == "pro" else []
            tier.allowed_models.set([models[n] for n in allowed])
            tier.default_model = models["gpt-4o-mini"]
            tier.fallback_model = models["gpt-4.1-nano"]
            tier.save()

        User = get_user_model()
        password = os.environ.get("DEMO_ADMIN_PASSWORD", "admin")
        admin, created = User.objects.get_or_create(
            username="admin", defaults={"is_staff": True, "is_superuser": True}
        )
        if created:
            admin.set_password(password)
            admin.save()
        demo, _ = User.objects.get_or_create(username="demo")
        UserQuota.objects.update_or_create(
            user=demo, defaults={"tier": Tier.objects.get(slug="free")}
        )
        key, kept = self.demo_key(demo, options["key_file"])

        self.stdout.write("Demo data loaded.")
        if created:
            self.stdout.write(f"Admin login: admin / {password}")
        else:
            self.stdout.write("Admin login: admin (password unchanged)")
        self.stdout.write(f"Demo user 'demo' on tier 'free'; its API key: {key}")
        if kept:
            self.stdout.write(f"(the same key as before, kept in {options['key_file']})")

    def demo_key(self, demo: Any, key_file: Path | None) -> tuple[str, bool]:
        """(the demo key, whether it is the one kept in `key_file`)."""
        if key_file is not None and key_file.exists():
            kept = key_file.read_text().strip()
            try:
                api_key = APIKey.objects.get_from_key(kept)
            except APIKey.DoesNotExist:
                api_key = None
            if (
                isinstance(api_key, APIKey)
                and api_key.user_id == demo.pk
                and not api_key.has_expired
            ):
                return kept, True
        revoked = APIKey.objects.filter(user=demo, name="demo", revoked=False).update(revoked=True)
        _, key = APIKey.objects.create_key(user=demo, name="demo")
        if key_file is not None:
            key_file.touch(mode=0o600)
            key_file.write_text(key + "\n")
        if revoked:
            self.stdout.write(
                self.style.WARNING(
                    "THE PREVIOUS DEMO KEY WAS REVOKED: use the new key below "
                    "(clients holding the old one now get 401)."
                )
            )
        return key, False
