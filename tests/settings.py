"""The deployment's settings, with a secret key of the suite's own (DEBUG is off in tests)."""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SECRET_KEY", "tests-only-secret-key")

from quotaproject.settings import *  # noqa: F403

# The suite does not run collectstatic: static URLs without the manifest's hashed names.
STORAGES = {
    **STORAGES,  # noqa: F405
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# No collectstatic either: WhiteNoise looks files up as they are asked for.
WHITENOISE_AUTOREFRESH = True
