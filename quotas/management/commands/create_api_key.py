from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from quotas.models import APIKey, Tier, UserQuota


class Command(BaseCommand):
    help = "Issue a new API key for a user and print it (it is shown only this once)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--tier", help="Also put the user on this tier (its slug).")
        parser.add_argument("--name", default="cli", help="A name for the key (default: cli).")

    def handle(
        self, *args: Any, username: str, tier: str | None, name: str, **options: Any
    ) -> None:
        User = get_user_model()
        try:
            user = User.objects.get(**{User.USERNAME_FIELD: username})
        except User.DoesNotExist:
            raise CommandError(f"No user named {username!r}.") from None
        if tier is not None:
            try:
                chosen = Tier.objects.get(slug=tier)
            except Tier.DoesNotExist:
                slugs = ", ".join(Tier.objects.values_list("slug", flat=True)) or "none"
                raise CommandError(f"No tier {tier!r}; known tiers: {slugs}.") from None
            UserQuota.objects.update_or_create(user=user, defaults={"tier": chosen})
        _, key = APIKey.objects.create_key(user=user, name=name[:50])
        self.stdout.write(key)
