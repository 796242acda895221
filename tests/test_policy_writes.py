"""Bulk writes to tiers, quotas, keys and models reach every process's cached quotas."""

from __future__ import annotations

import time
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from quotas.models import AIModel, APIKey, Team, Tier, UserQuota
from quotas.policy import PolicyCache, Quota, quota_from_tier
from quotas.services import service

pytestmark = pytest.mark.django_db

CACHE_SECONDS = 0.05


@pytest.fixture
def pro() -> Tier:
    return Tier.objects.create(slug="pro", name="Pro", tokens_per_day=1_000_000)


@pytest.fixture
def ada():
    return get_user_model().objects.create_user("ada")


def version() -> int:
    return service.policy_version()


def other_process_quota(cache: PolicyCache, tier: Tier) -> Quota:
    """What a second process, with its own cache, serves for this tier."""
    return cache.get(("tier", tier.pk), lambda: quota_from_tier(Tier.objects.get(pk=tier.pk)))


def test_a_queryset_update_of_a_tier_reaches_another_process_within_the_cache_time(
    settings, pro
) -> None:
    settings.QUOTAS = {**settings.QUOTAS, "POLICY_CACHE_SECONDS": CACHE_SECONDS}
    other = PolicyCache()
    assert other_process_quota(other, pro).tokens_per_day == 1_000_000

    Tier.objects.filter(pk=pro.pk).update(tokens_per_day=10)

    time.sleep(CACHE_SECONDS)
    assert other_process_quota(other, pro).tokens_per_day == 10


def test_a_raw_sql_write_is_not_seen_until_quota_invalidate(settings, pro) -> None:
    settings.QUOTAS = {**settings.QUOTAS, "POLICY_CACHE_SECONDS": CACHE_SECONDS}
    other = PolicyCache()
    assert other_process_quota(other, pro).tokens_per_day == 1_000_000
    with connection.cursor() as cursor:
        table = connection.ops.quote_name(Tier._meta.db_table)
        cursor.execute(f"UPDATE {table} SET tokens_per_day = 10 WHERE id = %s", [pro.pk])

    time.sleep(CACHE_SECONDS)
    assert other_process_quota(other, pro).tokens_per_day == 1_000_000  # nobody said so

    call_command("quota_invalidate", stdout=StringIO())
    time.sleep(CACHE_SECONDS)
    assert other_process_quota(other, pro).tokens_per_day == 10


def test_bulk_create_and_bulk_update_of_quotas_bump_the_version(pro, ada) -> None:
    before = version()
    (created,) = UserQuota.objects.bulk_create([UserQuota(user=ada, tier=pro)])
    after_create = version()
    created.blocked = True
    UserQuota.objects.bulk_update([created], ["blocked"])
    assert before < after_create < version()


def test_a_queryset_delete_bumps_the_version(pro, ada) -> None:
    UserQuota.objects.create(user=ada, tier=pro)
    before = version()
    UserQuota.objects.filter(user=ada).delete()
    assert version() > before


def test_a_team_update_bumps_the_version(pro) -> None:
    team = Team.objects.create(name="Acme", slug="acme", tier=pro)
    before = version()
    Team.objects.filter(pk=team.pk).update(blocked=True)
    assert version() > before


def test_a_model_catalogue_update_bumps_the_version() -> None:
    AIModel.objects.create(name="gpt-4o-mini")
    before = version()
    AIModel.objects.filter(name="gpt-4o-mini").update(active=False)
    assert version() > before


def test_an_update_that_matches_nothing_changes_nothing(pro) -> None:
    before = version()
    Tier.objects.filter(slug="nope").update(tokens_per_day=1)
    assert version() == before


def test_revoking_a_key_bumps_the_version_but_its_last_use_does_not(ada) -> None:
    key, _ = APIKey.objects.create_key(user=ada, name="ci")
    before = version()
    APIKey.objects.filter(pk=key.pk).update(last_used_at=timezone.now())
    key.last_used_at = timezone.now()
    key.save(update_fields=["last_used_at"])
    assert version() == before
    APIKey.objects.filter(pk=key.pk).update(revoked=True)
    assert version() > before
