from __future__ import annotations

import os
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
