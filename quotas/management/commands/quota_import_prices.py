from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from quotas.price_list import PriceListMissing, import_prices


class Command(BaseCommand):
    help = (
        "Update the model catalogue's prices from the genai-prices price list, printing what "
        "changed; a model routed to a Provider is looked up by its base URL."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--provider", default="openai", help="The price list's provider id (default: openai)."
        )
        parser.add_argument(
            "--add", action="store_true", help="Also add the provider's other models, inactive."
        )
        parser.add_argument("--dry-run", action="store_true", help="Print, change nothing.")

    def handle(self, *args: Any, provider: str, add: bool, dry_run: bool, **options: Any) -> None:
        try:
            with transaction.atomic():
                result = import_prices(provider_id=provider, add=add, save=not dry_run)
        except PriceListMissing as exc:
            raise CommandError(str(exc)) from None
        except LookupError:
            raise CommandError(f"The price list has no provider {provider!r}.") from None
        for model, field, old, new in result.changes:
            self.stdout.write(f"{model}: {field} {old} -> {new}")
        for model in result.added:
            self.stdout.write(f"{model}: added (inactive)")
        if result.unlisted:
            self.stdout.write(f"Not in the price list: {', '.join(result.unlisted)}")
        models = len({change[0] for change in result.changes})
        end = " (dry run: nothing saved)." if dry_run else "."
        self.stdout.write(
            f"Prices changed for {models} models, {len(result.added)} models added, "
            f"{len(result.unchanged)} unchanged{end}"
        )
