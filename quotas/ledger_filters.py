"""The ledger admin's filter by user: a search box, not one link per user."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.db.models import QuerySet
from django.http import HttpRequest


class UserFilter(admin.SimpleListFilter):
    """Rows of the user named exactly (their username, or their id)."""

    title = "user"
    parameter_name = "user"
    template = "admin/quotas/user_filter.html"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return []

    def has_output(self) -> bool:
        return True

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = (self.value() or "").strip()
        if not value:
            return queryset
        name = get_user_model().USERNAME_FIELD
        return queryset.filter(**{f"user__{name}": value})

    def choices(self, changelist: Any) -> Iterator[Any]:
        others = {
            key: value
            for key, value in changelist.get_filters_params().items()
            if key != self.parameter_name
        }
        query = changelist.params if hasattr(changelist, "params") else {}
        search = query.get("q", "")
        hidden = [(key, v) for key, values in others.items() for v in _listed(values)]
        if search:
            hidden.append(("q", search if isinstance(search, str) else search[-1]))
        yield {
            "value": self.value() or "",
            "hidden": hidden,
            "clear": changelist.get_query_string(remove=[self.parameter_name]),
        }


def _listed(value: Any) -> list[str]:
    return list(value) if isinstance(value, list | tuple) else [str(value)]
