from __future__ import annotations

import re
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.db import connection
from rest_framework.test import APIClient

from quotas.engine_factory import reset_engines
from quotas.models import AIModel, APIKey, Tier, UserQuota
from quotas.policy import quota_for_user

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def quota_with(key: str):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client.get("/v1/quota")


@pytest.fixture
def ada():
    return get_user_model().objects.create_user("ada")


class TestCreateAPIKey:
    def test_prints_a_working_key(self, ada):
        key = run("create_api_key", "ada").strip()
        assert re.fullmatch(r"\w{8}\.\w{32}", key)
        response = quota_with(key)
        assert response.status_code == 200
        assert response.json()["tier"]["slug"] == "default"
        assert APIKey.objects.get(user=ada).name == "cli"

    def test_each_run_a_new_key(self, ada):
        first, second = run("create_api_key", "ada"), run("create_api_key", "ada")
        assert first != second
        assert APIKey.objects.filter(user=ada, revoked=False).count() == 2

    def test_tier(self, ada):
        Tier.objects.create(slug="pro", name="Pro")
        key = run("create_api_key", "ada", "--tier", "pro", "--name", "laptop").strip()
        assert UserQuota.objects.get(user=ada).tier.slug == "pro"
        assert quota_with(key).json()["tier"]["slug"] == "pro"
        assert APIKey.objects.get(user=ada).name == "laptop"

    def test_tier_keeps_the_users_overrides(self, ada):
        Tier.objects.create(slug="pro", name="Pro")
        UserQuota.objects.create(user=ada, tokens_per_day=5, note="trial")
        run("create_api_key", "ada", "--tier", "pro")
        quota = UserQuota.objects.get(user=ada)
        assert (quota.tier.slug, quota.tokens_per_day, quota.note) == ("pro", 5, "trial")

    def test_unknown_user(self):
        with pytest.raises(CommandError, match=r"^No user named 'bob'\.$"):
            run("create_api_key", "bob")

    def test_unknown_tier(self, ada):
        with pytest.raises(CommandError, match=r"^No tier 'gold'; known tiers: default\.$"):
            run("create_api_key", "ada", "--tier", "gold")
        assert not APIKey.objects.exists()


class TestSeedDemo:
    @pytest.fixture(autouse=True)
    def debug(self, settings):
        settings.DEBUG = True

    def test_refuses_with_debug_off(self, settings):
        settings.DEBUG = False
        with pytest.raises(CommandError, match=r"with DEBUG off it refuses.*--force"):
            run("seed_demo")
        assert not get_user_model().objects.filter(username="admin").exists()

    def test_force_loads_with_debug_off(self, settings):
        settings.DEBUG = False
        output = run("seed_demo", "--force")
        assert quota_with(self.demo_key(output)).json()["tier"]["slug"] == "free"

    @staticmethod
    def demo_key(output: str) -> str:
        match = re.search(r"its API key: (\S+)", output)
        assert match, output
        return match.group(1)

    def test_loads_the_demo(self):
        output = run("seed_demo")
        assert "Admin login: admin / admin" in output
        assert quota_with(self.demo_key(output)).json()["tier"]["slug"] == "free"
        assert set(Tier.objects.values_list("slug", flat=True)) == {"default", "free", "pro"}
        mini = AIModel.objects.get(name="gpt-4o-mini")
        assert mini.cached_input_price_per_million < mini.input_price_per_million
        assert (
            Tier.objects.get(slug="free")
            .allowed_models.filter(name="text-embedding-3-small")
            .exists()
        )
        assert get_user_model().objects.get(username="admin").check_password("admin")

    def test_idempotent(self):
        old = self.demo_key(run("seed_demo"))
        output = run("seed_demo")
        new = self.demo_key(output)
        assert Tier.objects.count() == 3
        assert AIModel.objects.count() == 4
        assert get_user_model().objects.filter(username="demo").count() == 1
        assert "password unchanged" in output
        assert quota_with(old).status_code == 401
        assert quota_with(new).status_code == 200
        assert APIKey.objects.filter(user__username="demo", revoked=False).count() == 1

    def test_says_loudly_that_the_previous_key_was_revoked(self):
        first = run("seed_demo")
        assert "REVOKED" not in first
        assert "THE PREVIOUS DEMO KEY WAS REVOKED" in run("seed_demo")

    def test_a_key_file_keeps_the_key_across_runs(self, tmp_path):
        key_file = tmp_path / "demo-key"
        first = self.demo_key(run("seed_demo", "--key-file", str(key_file)))
        assert key_file.read_text().strip() == first
        assert key_file.stat().st_mode & 0o077 == 0  # readable by its owner only
        output = run("seed_demo", "--key-file", str(key_file))
        assert self.demo_key(output) == first
        assert "REVOKED" not in output
        assert quota_with(first).status_code == 200

    def test_a_key_file_whose_key_no_longer_works_gets_a_new_one(self, tmp_path):
        key_file = tmp_path / "demo-key"
        old = self.demo_key(run("seed_demo", "--key-file", str(key_file)))
        APIKey.objects.filter(user__username="demo").update(revoked=True)
        new = self.demo_key(run("seed_demo", "--key-file", str(key_file)))
        assert new != old
        assert key_file.read_text().strip() == new
        assert quota_with(new).status_code == 200
        key_file.write_text("not-a-key\n")
        assert self.demo_key(run("seed_demo", "--key-file", str(key_file))) != new

    def test_keeps_a_changed_admin_password(self):
        run("seed_demo")
        admin = get_user_model().objects.get(username="admin")
        admin.set_password("s3cret-enough")
        admin.save()
        run("seed_demo")
        admin.refresh_from_db()
        assert admin.check_password("s3cret-enough")


class TestQuotaInvalidate:
    def test_every_process_reloads_after_a_write_django_did_not_see(self, ada, settings):
        settings.QUOTAS = {**settings.QUOTAS, "POLICY_CACHE_SECONDS": 0}
        tier = Tier.objects.create(slug="pro", name="Pro", tokens_per_day=1000)
        UserQuota.objects.create(user=ada, tier=tier)
        assert quota_for_user(ada).tokens_per_day == 1000
        with connection.cursor() as cursor:
            table = connection.ops.quote_name(Tier._meta.db_table)
            cursor.execute(f"UPDATE {table} SET tokens_per_day = 5 WHERE id = %s", [tier.pk])
        assert quota_for_user(ada).tokens_per_day == 1000

        out = run("quota_invalidate")

        assert "reloads its limits within 0 s" in out
        assert quota_for_user(ada).tokens_per_day == 5

    def test_redis_unreachable_is_an_error(self, settings):
        settings.QUOTAS = {**settings.QUOTAS, "REDIS_URL": "redis://127.0.0.1:1/0"}
        reset_engines()
        with pytest.raises(CommandError, match="Redis could not be reached"):
            run("quota_invalidate")


@pytest.mark.django_db
class TestImportPrices:
    @pytest.fixture
    def catalogue(self):
        from decimal import Decimal

        made = {
            "gpt-4o": AIModel.objects.create(
                name="gpt-4o", input_price_per_million=Decimal("9"), output_price_per_million=1
            ),
            "our-own-model": AIModel.objects.create(name="our-own-model"),
        }
        return made

    def listed(self, name: str) -> dict:
        from quotas.price_list import _snapshot, listed_prices

        _, info = _snapshot().find_provider_model(name, None, "openai", None)
        return listed_prices(info)

    def test_dry_run_prints_the_changes_and_saves_nothing(self, catalogue):
        output = run("quota_import_prices", "--dry-run")

        listed = self.listed("gpt-4o")
        assert (
            f"gpt-4o: input_price_per_million 9.000000 -> {listed['input_price_per_million']}"
            in (output)
        )
        assert "cached_input_price_per_million None -> " in output
        assert "Not in the price list: our-own-model" in output
        assert "dry run: nothing saved" in output
        gpt4o = AIModel.objects.get(name="gpt-4o")
        assert (gpt4o.input_price_per_million, gpt4o.cached_input_price_per_million) == (9, None)

    def test_an_import_updates_the_catalogue_once(self, catalogue):
        run("quota_import_prices")
        again = run("quota_import_prices")

        gpt4o = AIModel.objects.get(name="gpt-4o")
        listed = self.listed("gpt-4o")
        assert gpt4o.input_price_per_million == listed["input_price_per_million"]
        assert gpt4o.cached_input_price_per_million == listed["cached_input_price_per_million"]
        assert gpt4o.cached_input_price_per_million < gpt4o.input_price_per_million
        assert "Prices changed for 0 models, 0 models added, 1 unchanged." in again

    def test_add_creates_the_providers_other_models_inactive(self, catalogue):
        run("quota_import_prices", "--add")

        added = AIModel.objects.filter(name="text-embedding-3-small").get()
        assert not added.active  # no tier with empty allowed_models gets it unasked
        assert added.input_price_per_million > 0 and added.output_price_per_million == 0

    def test_a_model_routed_to_a_provider_is_priced_from_its_base_url(self, catalogue):
        from quotas.models import Provider

        router = Provider.objects.create(name="router", base_url="https://openrouter.ai/api/v1")
        AIModel.objects.create(name="anthropic/claude-sonnet-4", provider=router)

        output = run("quota_import_prices", "--dry-run")

        assert "anthropic/claude-sonnet-4: input_price_per_million 0.000000 -> " in output

    def test_an_unknown_provider_is_refused(self, catalogue):
        with pytest.raises(CommandError, match="no provider 'nope'"):
            run("quota_import_prices", "--provider", "nope")
