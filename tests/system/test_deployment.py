"""The deployment as an operator runs it: collectstatic, then gunicorn or uvicorn with DEBUG
off."""

from __future__ import annotations

import http.client
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from .conftest import ROOT
from .http import call

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def static_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`python manage.py collectstatic` as the deployment steps say, into a fresh folder."""
    root = tmp_path_factory.mktemp("deployment") / "static"
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "QUOTAS_"))}
    environ.pop("DATABASE_URL", None)  # collectstatic needs no database
    environ.update(
        DJANGO_SETTINGS_MODULE="quotaproject.settings",
        DJANGO_DEBUG="0",
        DJANGO_SECRET_KEY="system-tests-only-secret-key",
        DJANGO_STATIC_ROOT=str(root),
        QUOTAS_PROVIDER="mock",
    )
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput"],
        cwd=ROOT,
        env=environ,
        check=True,
        capture_output=True,
    )
    return root


@pytest.fixture(params=["app_servers", "asgi_servers"], ids=["gunicorn", "uvicorn"])
def server(request: pytest.FixtureRequest, real_redis: str, static_root: Path) -> str:
    [url] = request.getfixturevalue(request.param)(
        real_redis,
        count=1,
        DJANGO_SETTINGS_MODULE="quotaproject.settings",  # not the suite's
        DJANGO_STATIC_ROOT=str(static_root),
    )
    return str(url)


def static_urls(page: bytes) -> list[str]:
    return sorted(set(re.findall(r"""["'](/static/[^"'?#]+)""", page.decode())))


def test_api_docs_and_admin_static_files_answer_200(server):
    status, _, docs = call(f"{server}/api/docs/")
    assert status == 200
    status, _, login = call(f"{server}/admin/login/")
    assert status == 200
    urls = static_urls(docs) + static_urls(login)
    assert any("swagger-ui" in url for url in urls)
    assert any(url.endswith(".css") for url in static_urls(login))
    hashed = [url for url in urls if re.search(r"\.[0-9a-f]{12}\.\w+$", url)]
    assert any("swagger-ui-bundle" in url for url in hashed), urls
    for url in urls:
        status, headers, body = call(f"{server}{url}")
        assert (url, status) == (url, 200)
        assert body
        if url in hashed:  # a name carrying its content's hash may be cached for good
            cache = {k.lower(): v for k, v in headers.items()}.get("cache-control", "")
            assert "immutable" in cache, url


def post_chunked(url: str, parts: Iterator[bytes], headers: dict[str, str]) -> tuple[int, Any]:
    split = urlsplit(url)
    conn = http.client.HTTPConnection(split.hostname, split.port, timeout=30)
    try:
        conn.request("POST", split.path, body=parts, headers=headers, encode_chunked=True)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def test_a_chunked_chat_request_is_read(server, tier_user):
    _, key = tier_user(requests_per_minute=100, burst=100)
    body = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]})
    half = len(body) // 2
    status, answer = post_chunked(
        f"{server}/v1/chat/completions",
        iter([body[:half].encode(), body[half:].encode()]),
        {"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    assert status == 200, answer
    assert answer["choices"][0]["message"]["content"].startswith("[mock]")


def test_a_session_cookie_holding_a_nul_byte_is_no_session(server):
    status, _, body = call(
        f"{server}/v1/quota", headers={"Cookie": 'sessionid="abcdefgh\\000ijklmnop"'}
    )
    assert status == 401, body
