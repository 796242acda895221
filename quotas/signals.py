"""The signals the app sends, and the receivers that drop cached quotas in every process
when what they are made of changes.

`threshold_crossed(sender, alert)`: a user or team passed an alert threshold (once per
limit, percent and window; sent once the alert is committed).
`quota_exceeded(sender, user_id, limit, decision, soft)`: a call was refused for `limit`
(`soft`: a soft tier's call let through instead).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models.signals import m2m_changed, post_delete, post_save
from django.dispatch import Signal, receiver

from . import policy
from .models import AIModel, AlertRule, APIKey, Provider, Team, Tier, UserQuota
from .policy_writes import APIKeyQuerySet, policy_changed

threshold_crossed = Signal()
quota_exceeded = Signal()


@receiver(policy_changed)
@receiver(post_save, sender=Tier)
@receiver(post_delete, sender=Tier)
@receiver(post_save, sender=UserQuota)
@receiver(post_delete, sender=UserQuota)
@receiver(post_save, sender=Team)
@receiver(post_delete, sender=Team)
@receiver(post_save, sender=APIKey)
@receiver(post_delete, sender=APIKey)
@receiver(post_save, sender=AIModel)
@receiver(post_delete, sender=AIModel)
@receiver(post_save, sender=Provider)
@receiver(post_delete, sender=Provider)
@receiver(post_save, sender=AlertRule)
@receiver(post_delete, sender=AlertRule)
@receiver(m2m_changed, sender=Tier.allowed_models.through)
def quotas_changed(**kwargs: Any) -> None:
    fields = kwargs.get("update_fields")
    if kwargs.get("sender") is APIKey and fields and set(fields) <= APIKeyQuerySet.ignored_fields:
        return  # bookkeeping only: no limit depends on it
    policy.invalidate()
    # Again once committed: another process may have cached the old rows in between.
    transaction.on_commit(policy.invalidate)


# Only what a cached API key's owner is checked for; a login's `last_login` is not.
USER_BOOKKEEPING = frozenset({"last_login"})


@receiver(post_save, sender=settings.AUTH_USER_MODEL)
@receiver(post_delete, sender=settings.AUTH_USER_MODEL)
def user_changed(**kwargs: Any) -> None:
    """A user deactivated (or deleted) loses their cached keys in every process."""
    fields = kwargs.get("update_fields")
    if kwargs.get("created") or (fields and set(fields) <= USER_BOOKKEEPING):
        return
    policy.invalidate()
    transaction.on_commit(policy.invalidate)
