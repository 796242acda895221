from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_settings(**env: str) -> subprocess.CompletedProcess[str]:
    """Import the deployment's settings in a fresh process with only `env` set."""
    environ = {
        k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "QUOTAS_", "OPENAI_"))
    }
    environ.update(PYTHONPATH=str(ROOT), **env)
    code = "import quotaproject.settings as s; print('DEBUG', s.DEBUG)"
    return subprocess.run(
        [sys.executable, "-c", code], env=environ, cwd=ROOT, capture_output=True, text=True
    )


def test_debug_off_without_a_secret_key_is_refused():
    done = load_settings()
    assert done.returncode != 0
    assert "ImproperlyConfigured" in done.stderr
    assert "DJANGO_SECRET_KEY is not set" in done.stderr


def test_debug_off_with_a_secret_key_starts():
    done = load_settings(DJANGO_SECRET_KEY="a-long-random-production-key")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "DEBUG False"


def test_debug_is_on_only_when_asked():
    done = load_settings(DJANGO_DEBUG="1")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "DEBUG True"
    assert load_settings(DJANGO_DEBUG="0").returncode != 0


DEPLOYMENT = {
    "DJANGO_SECRET_KEY": "x7Jq2-production-key-that-is-long-and-random-enough-9a4fT0pLw3",
    "OPENAI_API_KEY": "sk-test",
    "REDIS_URL": "redis://127.0.0.1:6379/0",
    "DATABASE_URL": "postgres://app@db.internal:5432/quotas",
}
TLS_WARNINGS = {"security.W004", "security.W008", "security.W012", "security.W016"}


def check_deploy(**env: str) -> tuple[int, set[str], str]:
    """(exit code, check ids, output) of `manage.py check --deploy` with DEBUG off."""
    environ = {
        k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "QUOTAS_", "OPENAI_"))
    }
    environ.update(DEPLOYMENT, **env)
    done = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy"],
        env=environ,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    output = done.stdout + done.stderr
    return done.returncode, set(re.findall(r"\((\w+\.[EW]\d+)\)", output)), output


def test_check_deploy_leaves_only_the_operators_tls_choices():
    code, ids, output = check_deploy()
    assert code == 0, output
    assert ids == TLS_WARNINGS


def test_check_deploy_is_clean_behind_https():
    code, ids, output = check_deploy(
        DJANGO_HTTPS="1",
        DJANGO_HSTS_SECONDS="31536000",
        DJANGO_HSTS_INCLUDE_SUBDOMAINS="1",
        DJANGO_HSTS_PRELOAD="1",
    )
    assert code == 0, output
    assert ids == set()
    assert "no issues" in output


def test_check_deploy_without_a_provider_key_is_an_error():
    code, ids, _ = check_deploy(OPENAI_API_KEY="")
    assert code != 0
    assert "quotas.E007" in ids
