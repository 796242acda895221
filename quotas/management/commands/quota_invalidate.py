from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from quotas.conf import conf
from quotas.engine import CountersUnavailable
from quotas.services import service


class Command(BaseCommand):
    help = (
        "Make every process reload tiers, quotas, keys and models, after writes Django did "
        "not see (SQL run outside Django, a restored backup, another application)."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            version = service.bump_policy_version()
        except CountersUnavailable as exc:
            raise CommandError(
                f"Redis could not be reached ({exc}); processes that cannot reach it either "
                f"reload every {conf.POLICY_CACHE_SECONDS:g} s, the others keep their cache."
            ) from exc
        self.stdout.write(
            f"Policy version {version}: every process reloads its limits within "
            f"{conf.POLICY_CACHE_SECONDS:g} s."
        )
