"""Which Redis the suite runs on, and clean state for every test.

In order: `QUOTAS_TEST_REDIS_URL` (CI sets it, with `QUOTAS_TEST_REQUIRE_REDIS=1` so an
unreachable server fails the run), else a `redis-server` from PATH started by pytest-redis
on a free port, else the embedded in-process store.
"""

from __future__ import annotations

import os
import shutil
from importlib import import_module

import pytest
from pytest_redis import factories

from quotas.engine import QuotaEngine, connect

redis_proc = factories.redis_proc(port=None, save="", timeout=30)

MODE_URL, MODE_SERVER, MODE_EMBEDDED = "url", "server", "embedded"


def _mode() -> str:
    if os.environ.get("QUOTAS_TEST_REDIS_URL"):
        return MODE_URL
    if os.environ.get("QUOTAS_TEST_REQUIRE_REDIS") == "1":
        raise pytest.UsageError("QUOTAS_TEST_REQUIRE_REDIS=1 needs QUOTAS_TEST_REDIS_URL.")
    if shutil.which("redis-server"):
        return MODE_SERVER
    return MODE_EMBEDDED


def pytest_report_header(config: pytest.Config) -> str:
    mode = _mode()
    if mode == MODE_URL:
        return f"quotas: Redis at {os.environ['QUOTAS_TEST_REDIS_URL']}"
    if mode == MODE_SERVER:
        return f"quotas: redis-server from PATH ({shutil.which('redis-server')}) via pytest-redis"
    return "quotas: no Redis found; using the embedded in-process store"


@pytest.fixture(scope="session")
def redis_url(request: pytest.FixtureRequest) -> str | None:
    """The URL of the Redis the suite runs on; None for the embedded store."""
    mode = _mode()
    if mode == MODE_URL:
        url = os.environ["QUOTAS_TEST_REDIS_URL"]
        try:
            connect(url).ping()
        except Exception as exc:
            pytest.exit(f"Redis at {url} is unreachable: {exc}", returncode=3)
        return url
    if mode == MODE_SERVER:
        proc = request.getfixturevalue("redis_proc")
        return f"redis://{proc.host}:{proc.port}/0"
    return None


@pytest.fixture(scope="session")
def real_redis(redis_url: str | None) -> str:
    """Skip a test that needs a Redis shared between processes."""
    if redis_url is None:
        pytest.skip("needs a real Redis server (several processes share it)")
    return redis_url


@pytest.fixture
def redis_client(redis_url: str | None):
    client = connect(redis_url)
    if "Cluster" in type(client).__name__:
        client.flushall()
    else:
        client.flushdb()
    yield client
    client.close()


@pytest.fixture
def engine(redis_client) -> QuotaEngine:
    return QuotaEngine(redis_client, prefix="test")


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    """Logins hash with a cheap hasher here (API keys keep their own SHA-512 hasher)."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def mock_provider(monkeypatch: pytest.MonkeyPatch, settings):
    """The in-process mock provider, chosen with QUOTAS["PROVIDER"]: fresh, no latency, no
    fault, whatever the environment says."""
    from quotas import upstream

    settings.QUOTAS = {**getattr(settings, "QUOTAS", {}), "PROVIDER": "mock"}
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("QUOTAS_MOCK_FAIL", raising=False)
    monkeypatch.delenv("QUOTAS_MOCK_LATENCY", raising=False)
    upstream.reset_client()
    transport = upstream.mock_transport()
    transport.latency = 0.0
    transport.fail = ""
    yield transport
    upstream.reset_client()


@pytest.fixture(autouse=True)
def quota_counters(redis_url: str | None, settings):
    """Point the app at the suite's Redis, flushed, with no cached engines or quotas."""
    from quotas import engine_factory, policy

    settings.QUOTAS = {**getattr(settings, "QUOTAS", {}), "REDIS_URL": redis_url}
    engine_factory.reset_engines()
    policy.cache.clear()
    client = connect(redis_url)
    if "Cluster" in type(client).__name__:
        client.flushall()
    else:
        client.flushdb()
    client.close()
    yield
    engine_factory.reset_engines()
    policy.cache.clear()


DB_FIXTURES = frozenset({"db", "transactional_db", "live_server", "django_db_reset_sequences"})


@pytest.fixture(autouse=True)
def default_tier(request: pytest.FixtureRequest) -> None:
    """The default tier the migrations create, as every deployment has it; a transactional
    test's flush deletes it, and without it callers are refused."""
    marked = request.node.get_closest_marker("django_db") is not None
    if not marked and DB_FIXTURES.isdisjoint(request.fixturenames):
        return
    request.getfixturevalue("db")  # the test's own database access, as it asked for it
    from django.apps import apps

    migration = import_module("quotas.migrations.0002_default_tier")
    migration.create_default_tier(apps, None)
