"""Writes to the rows limits are made of, announced even where Django sends no signal.

`save()` and `delete()` send Django's own signals; a queryset's `update()` and
`bulk_create()` send none (`bulk_update()` runs `update()`). The querysets here send
`policy_changed` after those, so every process drops its cached quotas (see
`quotas.signals`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

from django.db import models
from django.dispatch import Signal

# Sent with `sender` (the model) after a bulk write to its rows.
policy_changed = Signal()


class PolicyQuerySet(models.QuerySet[Any]):
    """A queryset whose bulk writes announce a policy change.

    `ignored_fields` lists fields no limit depends on (bookkeeping such as a key's
    `last_used_at`): an `update()` of only those announces nothing.
    """

    ignored_fields: ClassVar[frozenset[str]] = frozenset()

    def _changed(self, fields: Iterable[str] | None = None) -> None:
        if fields is not None and set(fields) <= self.ignored_fields:
            return
        policy_changed.send(sender=self.model)

    def update(self, **kwargs: Any) -> int:
        count = super().update(**kwargs)
        if count:
            self._changed(kwargs)
        return count

    def bulk_create(self, objs: Iterable[Any], *args: Any, **kwargs: Any) -> list[Any]:
        created = super().bulk_create(objs, *args, **kwargs)
        if created:
            self._changed()
        return created

    def delete(self) -> tuple[int, dict[str, int]]:
        # Rows deleted without a post_delete signal (a fast delete) are announced here too.
        deleted = super().delete()
        if deleted[0]:
            self._changed()
        return deleted


class APIKeyQuerySet(PolicyQuerySet):
    ignored_fields = frozenset({"last_used_at"})
