from __future__ import annotations

import sys

import pytest
from django.core.checks import Error, Tags, Warning, run_checks

from quotas.checks import check_default_tier, check_settings
from quotas.models import Tier

VALID = {"REDIS_URL": "redis://127.0.0.1:6379/0", "PROVIDER": "mock"}


@pytest.fixture(autouse=True)
def provider_key(monkeypatch):
    """A provider key, so only the tests about it see the missing-provider error."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")


def ids(messages):
    return [m.id for m in messages]


def test_valid_settings_pass(settings):
    settings.QUOTAS = VALID
    assert check_settings() == []


def test_registered_with_django(settings):
    settings.QUOTAS = "redis://localhost"
    assert "quotas.E001" in ids(run_checks(tags=[Tags.compatibility]))


def test_e001_quotas_not_a_dict(settings):
    settings.QUOTAS = ["REDIS_URL"]
    [message] = check_settings()
    assert isinstance(message, Error)
    assert message.id == "quotas.E001"
    assert message.hint


def test_e002_unknown_keys(settings):
    settings.QUOTAS = {**VALID, "REDIS_ULR": "x", "FAILOPEN": True}
    [message] = check_settings()
    assert message.id == "quotas.E002"
    assert "FAILOPEN, REDIS_ULR" in message.msg
    assert "REDIS_URL" in message.hint


@pytest.mark.parametrize("url", ["http://127.0.0.1:6379", "memcached://x"])
def test_e003_unsupported_redis_scheme(settings, url):
    settings.QUOTAS = {"REDIS_URL": url}
    [message] = check_settings()
    assert message.id == "quotas.E003"
    assert repr(url.split("://")[0]) in message.msg


def test_e003_not_a_url(settings):
    settings.QUOTAS = {"REDIS_URL": 6379}
    [message] = check_settings()
    assert message.id == "quotas.E003"


@pytest.mark.parametrize(
    "url", ["redis://h", "rediss://h", "unix:///tmp/r.sock", "redis+cluster://h:7000"]
)
def test_e003_supported_schemes(settings, url):
    settings.QUOTAS = {"REDIS_URL": url}
    assert check_settings() == []


def test_e004_unknown_time_zone(settings):
    settings.QUOTAS = {**VALID, "TIME_ZONE": "Mars/Olympus_Mons"}
    [message] = check_settings()
    assert message.id == "quotas.E004"
    assert "Mars/Olympus_Mons" in message.msg


@pytest.mark.parametrize(
    ("name", "value"),
    [("NUM_PROXIES", -1), ("NUM_PROXIES", "1"), ("NUM_PROXIES", True), ("LEASE_SECONDS", None)],
)
def test_e005_negative_or_not_a_number(settings, name, value):
    settings.QUOTAS = {**VALID, name: value}
    [message] = check_settings()
    assert message.id == "quotas.E005"
    assert name in message.msg


def test_e008_trusted_proxies_that_are_no_address(settings):
    settings.QUOTAS = {**VALID, "TRUSTED_PROXIES": ["10.0.0.0/8", "proxy.internal", "::1"]}
    [message] = check_settings()
    assert message.id == "quotas.E008"
    assert "'proxy.internal'" in message.msg
    assert "10.0.0.0/8" not in message.msg


def test_trusted_proxies_as_addresses_and_networks_pass(settings):
    settings.QUOTAS = {**VALID, "TRUSTED_PROXIES": ["10.0.0.1", "172.16.0.0/12", "fd00::/8"]}
    assert check_settings() == []


@pytest.mark.parametrize("module", ["fakeredis", "lupa"])
def test_e009_no_redis_url_and_no_embedded_store(settings, monkeypatch, module):
    monkeypatch.setitem(sys.modules, module, None)  # as if not installed
    settings.DEBUG = True
    settings.QUOTAS = {"PROVIDER": "mock"}
    [message] = check_settings()
    assert message.id == "quotas.E009"
    assert module in message.msg
    assert "django-ai-quotas[embedded]" in message.hint
    settings.QUOTAS = VALID  # with a Redis URL the embedded store is not needed
    assert check_settings() == []


def test_w001_no_redis_url_in_production(settings):
    settings.DEBUG = False
    settings.QUOTAS = {}
    [message] = check_settings()
    assert isinstance(message, Warning)
    assert message.id == "quotas.W001"
    assert message.hint


def test_w001_silent_in_debug(settings):
    settings.DEBUG = True
    settings.QUOTAS = {}
    assert check_settings() == []


def test_e006_unknown_provider(settings):
    settings.QUOTAS = {**VALID, "PROVIDER": "anthropic"}
    [message] = check_settings()
    assert message.id == "quotas.E006"
    assert "'anthropic'" in message.msg
    assert message.hint


def test_e007_no_provider_with_debug_off(settings, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    settings.DEBUG = False
    settings.QUOTAS = {**VALID, "PROVIDER": "openai"}
    [message] = check_settings()
    assert message.id == "quotas.E007"
    assert "OPENAI_API_KEY" in message.msg
    assert "'mock'" in message.hint


def test_provider_key_or_mock_or_debug_passes(settings, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    settings.DEBUG = False
    settings.QUOTAS = {**VALID, "PROVIDER": "mock"}
    assert check_settings() == []
    settings.QUOTAS = {**VALID, "PROVIDER": "openai"}
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    assert check_settings() == []
    monkeypatch.delenv("OPENAI_API_KEY")
    settings.DEBUG = True
    assert check_settings() == []


@pytest.mark.django_db
def test_e010_no_default_tier():
    assert check_default_tier() == []
    Tier.objects.update(is_default=False)
    [message] = check_default_tier()
    assert isinstance(message, Error)
    assert message.id == "quotas.E010"
    assert "refused" in message.msg
    assert "is_default" in message.hint
    assert "quotas.E010" in ids(run_checks(tags=[Tags.database]))


@pytest.mark.django_db
def test_e010_only_for_the_database_holding_the_tiers():
    Tier.objects.update(is_default=False)
    assert check_default_tier(databases=["other"]) == []
