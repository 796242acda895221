"""The deployment's settings, with a secret key of the suite's own (DEBUG is off in tests)."""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SECRET_KEY", "tests-only-secret-key")

from quotaproject.settings import *  # noqa: F403
