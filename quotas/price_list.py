"""The model catalogue's prices from a maintained price list: the `genai-prices` package
(the `prices` extra), read from the copy it ships, never fetched at request time."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from .models import MONEY, AIModel

# AIModel price fields and the price list's keys (USD per million tokens).
FIELDS = {
    "input_price_per_million": "input_mtok",
    "cached_input_price_per_million": "cache_read_mtok",
    "output_price_per_million": "output_mtok",
}
PLACES = Decimal(1).scaleb(-MONEY["decimal_places"])


class PriceListMissing(Exception):
    """The `genai-prices` package is not installed."""


@dataclass
class Import:
    """What an import changed (or would change): (model, field, old, new) per price."""

    changes: list[tuple[str, str, Decimal | None, Decimal | None]] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    unlisted: list[str] = field(default_factory=list)


def _snapshot() -> Any:
    try:
        from genai_prices import data_snapshot
    except ImportError:
        raise PriceListMissing(
            "The price list is the genai-prices package: pip install 'django-ai-quotas[prices]'."
        ) from None
    return data_snapshot.get_snapshot()


def _price(value: Any) -> Decimal | None:
    base = getattr(value, "base", value)  # tiered prices: their base price
    return None if base is None else Decimal(base).quantize(PLACES)


def listed_prices(info: Any) -> dict[str, Decimal | None]:
    """A price-list model's prices in force now, as AIModel field values."""
    prices = info.get_prices(datetime.now(tz=UTC))
    found = {name: _price(getattr(prices, key, None)) for name, key in FIELDS.items()}
    for name in ("input_price_per_million", "output_price_per_million"):
        found[name] = found[name] or Decimal(0)  # e.g. an embedding model's output
    return found


def _lookup(snapshot: Any, model: AIModel, provider_id: str) -> Any:
    """The model's entry: by its Provider's base URL if it has one, else `provider_id`."""
    url = model.provider.base_url if model.provider else None
    try:
        _, info = snapshot.find_provider_model(model.name, None, None if url else provider_id, url)
    except LookupError:
        return None
    return info


def import_prices(*, provider_id: str = "openai", add: bool = False, save: bool = True) -> Import:
    """Update the catalogue's prices from the list; `add` also creates (inactive) the
    provider's models missing from it. With `save=False` nothing is written."""
    snapshot = _snapshot()
    provider = snapshot.find_provider(None, provider_id, None)  # LookupError if unknown
    result = Import()
    for model in AIModel.objects.select_related("provider"):
        info = _lookup(snapshot, model, provider_id)
        if info is None:
            result.unlisted.append(model.name)
            continue
        moved = False
        for name, new in listed_prices(info).items():
            old = getattr(model, name)
            if old != new:
                result.changes.append((model.name, name, old, new))
                setattr(model, name, new)
                moved = True
        if not moved:
            result.unchanged.append(model.name)
        elif save:
            model.save()
    if add:
        known = set(AIModel.objects.values_list("name", flat=True))
        for info in provider.models:
            if info.id in known or info.deprecated:
                continue
            result.added.append(info.id)
            if save:
                AIModel.objects.create(name=info.id, active=False, **listed_prices(info))
    return result
