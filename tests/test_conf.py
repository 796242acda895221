from __future__ import annotations

from decimal import Decimal

from quotas.conf import conf


def test_defaults_without_a_quotas_setting(settings):
    del settings.QUOTAS
    assert conf.REDIS_URL is None
    assert conf.KEY_PREFIX == "quotas"
    assert conf.NUM_PROXIES == 0
    assert conf.ANONYMOUS_TIER is None
    assert conf.FAIL_OPEN is True
    assert conf.LEASE_SECONDS == 300.0
    assert conf.POLICY_CACHE_SECONDS == 1.0
    assert conf.ORG_SPEND_PER_MONTH is None
    assert conf.UPSTREAM_MAX_WAIT == 5.0
    assert conf.MAX_REQUEST_BYTES == 1_048_576
    assert conf.DEFAULT_MAX_TOKENS == 1024
    assert conf.STORE_PROMPTS is False
    assert conf.UPSTREAM_TIMEOUT == 60.0


def test_quotas_none_reads_as_defaults(settings):
    settings.QUOTAS = None
    assert conf.NUM_PROXIES == 0
    assert conf.FAIL_OPEN is True


def test_time_zone_follows_django_unless_set(settings):
    settings.QUOTAS = {}
    settings.TIME_ZONE = "America/New_York"
    assert conf.TIME_ZONE == "America/New_York"
    settings.QUOTAS = {"TIME_ZONE": "Europe/Paris"}
    assert conf.TIME_ZONE == "Europe/Paris"


def test_a_key_given_overrides_only_that_key(settings):
    settings.QUOTAS = {"NUM_PROXIES": 2, "FAIL_OPEN": False, "ANONYMOUS_TIER": "anon"}
    assert conf.NUM_PROXIES == 2
    assert conf.FAIL_OPEN is False
    assert conf.ANONYMOUS_TIER == "anon"
    assert conf.KEY_PREFIX == "quotas"
    assert conf.LEASE_SECONDS == 300.0


def test_read_on_every_access(settings):
    settings.QUOTAS = {"POLICY_CACHE_SECONDS": 5}
    assert conf.POLICY_CACHE_SECONDS == 5.0
    settings.QUOTAS = {"POLICY_CACHE_SECONDS": 0}
    assert conf.POLICY_CACHE_SECONDS == 0.0


def test_org_spend_is_an_exact_decimal(settings):
    settings.QUOTAS = {"ORG_SPEND_PER_MONTH": 0.1}
    tenth = conf.ORG_SPEND_PER_MONTH
    assert tenth == Decimal("0.1")
    settings.QUOTAS = {"ORG_SPEND_PER_MONTH": "250"}
    assert isinstance(conf.ORG_SPEND_PER_MONTH, Decimal)
    assert conf.ORG_SPEND_PER_MONTH == 250


def test_empty_values_mean_unset(settings):
    settings.QUOTAS = {"REDIS_URL": "", "ANONYMOUS_TIER": ""}
    assert conf.REDIS_URL is None
    assert conf.ANONYMOUS_TIER is None


def test_trusted_proxies_are_networks(settings):
    assert conf.TRUSTED_PROXIES == ()
    settings.QUOTAS = {"TRUSTED_PROXIES": ["10.0.0.1", "172.16.0.0/12", "::1", "not-an-ip"]}
    assert [str(n) for n in conf.TRUSTED_PROXIES] == ["10.0.0.1/32", "172.16.0.0/12", "::1/128"]
    settings.QUOTAS = {"TRUSTED_PROXIES": "10.0.0.0/8"}
    assert [str(n) for n in conf.TRUSTED_PROXIES] == ["10.0.0.0/8"]
