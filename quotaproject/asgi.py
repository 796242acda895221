"""The ASGI application: `uvicorn quotaproject.asgi:application --workers N`."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "quotaproject.settings")
# Each ASGI request runs its sync code in a thread of its own: no persistent connections,
# but Django's connection pool on PostgreSQL.
os.environ.setdefault("DJANGO_DB_POOL", "1")
# The static files (the admin's with `make run` too) come from WhiteNoise's middleware.
application = get_asgi_application()
