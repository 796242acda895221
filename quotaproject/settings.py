"""Settings of the deployment project, read from the environment (12-factor)."""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def _flag(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


DEVELOPMENT_SECRET_KEY = "dev-only-insecure-key-change-me"

# Off unless DJANGO_DEBUG=1 (`make run` sets it for the demo).
DEBUG = _flag("DJANGO_DEBUG", False)
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY") or DEVELOPMENT_SECRET_KEY
if not DEBUG and SECRET_KEY == DEVELOPMENT_SECRET_KEY:
    raise ImproperlyConfigured(
        "DJANGO_SECRET_KEY is not set: with DEBUG off the deployment refuses the built-in "
        "development key. Set DJANGO_SECRET_KEY to a long random value (or DJANGO_DEBUG=1 "
        "for local development)."
    )
ALLOWED_HOSTS = [
    h.strip() for h in os.environ.get("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost").split(",")
]

# Served over HTTPS (TLS ending at the reverse proxy, which sets X-Forwarded-Proto):
# HTTP redirected to HTTPS and cookies sent over HTTPS only. HSTS is the operator's call.
HTTPS = _flag("DJANGO_HTTPS", False)
SECURE_SSL_REDIRECT = HTTPS
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = HTTPS
if HTTPS:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_HSTS_SECONDS = int(os.environ.get("DJANGO_HSTS_SECONDS", "0"))
SECURE_HSTS_INCLUDE_SUBDOMAINS = _flag("DJANGO_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = _flag("DJANGO_HSTS_PRELOAD", False)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework_api_key",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "quotas",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "quotaproject.static_files.StaticFilesMiddleware",  # WhiteNoise, sync and async
    "quotas.middleware.MalformedRequestMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "quotas.middleware.RateLimitHeadersMiddleware",
]

ROOT_URLCONF = "quotaproject.urls"
WSGI_APPLICATION = "quotaproject.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# Persistent connections (seconds), or on PostgreSQL Django's connection pool instead
# (DJANGO_DB_POOL=1): `asgi.py` chooses the pool, as Django advises under ASGI.
DATABASES = {
    "default": dj_database_url.config(
        default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}",
        conn_max_age=int(os.environ.get("DJANGO_CONN_MAX_AGE") or 60),
    )
}
if _flag("DJANGO_DB_POOL", False):
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    if DATABASES["default"]["ENGINE"].endswith("postgresql"):
        DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {"min_size": 2, "max_size": 16}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = os.environ.get("REDIS_URL") or None
if REDIS_URL and "+cluster" not in REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "quotaproject",
        }
    }

LANGUAGE_CODE = "en-us"
TIME_ZONE = os.environ.get("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
# `python manage.py collectstatic` copies every static file here; WhiteNoise serves them
# (with DEBUG off too) under names carrying a content hash, cached for a year.
STATIC_ROOT = Path(os.environ.get("DJANGO_STATIC_ROOT") or BASE_DIR / "staticfiles")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "quotas.authentication.APIKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_THROTTLE_CLASSES": ["quotas.throttling.TierRateThrottle"],
    "EXCEPTION_HANDLER": "quotas.api.errors.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "django-ai-quotas",
    "DESCRIPTION": "OpenAI-compatible endpoints behind per-user quotas (/v1/), "
    "and the staff API (/api/).",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

QUOTAS = {
    "REDIS_URL": REDIS_URL,
    "NUM_PROXIES": int(os.environ.get("QUOTAS_NUM_PROXIES", "0")),
    "TRUSTED_PROXIES": [
        p.strip() for p in os.environ.get("QUOTAS_TRUSTED_PROXIES", "").split(",") if p.strip()
    ],
    "FAIL_OPEN": _flag("QUOTAS_FAIL_OPEN", True),
    "LEASE_SECONDS": float(os.environ.get("QUOTAS_LEASE_SECONDS", "300")),
    "UPSTREAM_TIMEOUT": float(os.environ.get("QUOTAS_UPSTREAM_TIMEOUT", "60")),
    "PROVIDER": os.environ.get("QUOTAS_PROVIDER", "openai"),
}
if os.environ.get("QUOTAS_METRICS_ALLOWED_NETWORKS"):
    QUOTAS["METRICS_ALLOWED_NETWORKS"] = [
        n.strip() for n in os.environ["QUOTAS_METRICS_ALLOWED_NETWORKS"].split(",") if n.strip()
    ]
if os.environ.get("QUOTAS_ORG_SPEND_PER_MONTH"):
    QUOTAS["ORG_SPEND_PER_MONTH"] = os.environ["QUOTAS_ORG_SPEND_PER_MONTH"]

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"quotas": {"handlers": ["console"], "level": "INFO"}},
}
