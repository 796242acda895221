"""Real processes for the system tests: our own redis-server, gunicorn and uvicorn app servers.

They share the test database with the test process, so they need a server database
(PostgreSQL); with SQLite's in-memory test database they are skipped.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from mirakuru import HTTPExecutor
from pytest_redis import factories

ROOT = Path(__file__).resolve().parents[2]

fault_redis = factories.redis_proc(port=None, save="", timeout=30)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def server_database_url(transactional_db: Any) -> str:
    settings = connection.settings_dict
    if connection.vendor != "postgresql":
        pytest.skip("app servers share the test database: needs DATABASE_URL on PostgreSQL")
    user = settings.get("USER") or "postgres"
    host = settings.get("HOST") or "127.0.0.1"
    port = settings.get("PORT") or 5432
    return f"postgres://{user}@{host}:{port}/{settings['NAME']}"


def _servers(
    server_database_url: str, command: Callable[[int], list[str]]
) -> tuple[Callable[..., list[str]], list[HTTPExecutor]]:
    """start(redis_url, count, **env): `count` app servers on loopback; their base URLs."""
    started: list[HTTPExecutor] = []

    def start(redis_url: str, count: int = 2, **env: str) -> list[str]:
        urls = []
        for _ in range(count):
            port = _free_port()
            environ = {"OPENAI_API_KEY": "", "OPENAI_BASE_URL": ""}
            environ.update(
                DATABASE_URL=server_database_url,
                REDIS_URL=redis_url,
                DJANGO_DEBUG="0",
                DJANGO_SECRET_KEY="system-tests-only-secret-key",
                QUOTAS_PROVIDER="mock",
                DJANGO_ALLOWED_HOSTS="127.0.0.1",
                PYTHONPATH=str(ROOT),
                **env,
            )
            server = HTTPExecutor(
                command(port),
                url=f"http://127.0.0.1:{port}/v1/models",
                method="GET",
                status=r"^[24]\d\d$",
                timeout=60,
                envvars=environ,
                stdout=subprocess.DEVNULL,
            )
            server.start()
            started.append(server)
            urls.append(f"http://127.0.0.1:{port}")
        return urls

    return start, started


def _gunicorn(port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "quotaproject.wsgi:application",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        "1",
        "--threads",
        "8",
        "--worker-class",
        "gthread",
        "--timeout",
        "30",
        "--graceful-timeout",
        "2",
        "--chdir",
        str(ROOT),
    ]


def _uvicorn(port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "quotaproject.asgi:application",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--no-access-log",
        "--lifespan",
        "off",
        "--timeout-graceful-shutdown",
        "2",
        "--app-dir",
        str(ROOT),
    ]


@pytest.fixture
def app_servers(server_database_url: str) -> Iterator[Callable[..., list[str]]]:
    """Start gunicorn (WSGI) app servers on loopback; returns their base URLs."""
    start, started = _servers(server_database_url, _gunicorn)
    yield start
    for server in started:
        server.stop()


@pytest.fixture
def asgi_servers(server_database_url: str) -> Iterator[Callable[..., list[str]]]:
    """Start uvicorn (ASGI) app servers on loopback; returns their base URLs."""
    start, started = _servers(server_database_url, _uvicorn)
    yield start
    for server in started:
        server.stop()


@pytest.fixture
def tier_user(transactional_db: Any) -> Callable[..., tuple[Any, str]]:
    """A user on a fresh tier with the given limits, and an API key of theirs."""
    from django.contrib.auth import get_user_model

    from quotas.models import AIModel, APIKey, Tier, UserQuota

    def make(**limits: Any) -> tuple[Any, str]:
        model, _ = AIModel.objects.get_or_create(
            name="gpt-4o-mini",
            defaults={
                "input_price_per_million": Decimal("0.15"),
                "output_price_per_million": Decimal("0.60"),
            },
        )
        tier = Tier.objects.create(slug=f"t{Tier.objects.count()}", name="System", **limits)
        tier.allowed_models.set([model])
        user = get_user_model().objects.create(username=f"sys{Tier.objects.count()}")
        UserQuota.objects.create(user=user, tier=tier)
        _, key = APIKey.objects.create_key(user=user, name="system")
        return user, key

    return make
