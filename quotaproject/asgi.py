"""The ASGI application: `uvicorn quotaproject.asgi:application --workers N`."""

from __future__ import annotations

import os

import django
from django.conf import settings
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "quotaproject.settings")
# Each ASGI request runs its sync code in a thread of its own: no persistent connections,
# but Django's connection pool on PostgreSQL.
os.environ.setdefault("DJANGO_DB_POOL", "1")
django.setup(set_prefix=False)

# Django's own middleware with their hooks on the event loop (see loop_middleware).
from quotaproject.loop_middleware import on_event_loop  # noqa: E402  # needs the apps loaded

settings.MIDDLEWARE = on_event_loop(settings.MIDDLEWARE)
# The static files (the admin's with `make run` too) come from WhiteNoise's middleware.
application = get_asgi_application()
