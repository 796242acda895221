"""System checks of the `QUOTAS` setting; ids, messages and hints kept together here."""

from __future__ import annotations

from importlib.util import find_spec
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register
from django.db import DatabaseError, router

from .conf import DEFAULTS, PROVIDERS, conf, parse_networks
from .upstream import provider_configured

# The embedded store's modules: fakeredis and its Lua runtime.
EMBEDDED_STORE = ("fakeredis", "lupa")


@register(Tags.compatibility)
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    user = getattr(settings, "QUOTAS", {})
    if not isinstance(user, dict):
        return [
            Error(
                "QUOTAS must be a dict.",
                hint="Set QUOTAS = {...} with the keys documented in the README.",
                id="quotas.E001",
            )
        ]
    unknown = sorted(set(user) - set(DEFAULTS))
    if unknown:
        errors.append(
            Error(
                f"Unknown QUOTAS keys: {', '.join(unknown)}.",
                hint=f"Known keys: {', '.join(sorted(DEFAULTS))}.",
                id="quotas.E002",
            )
        )
    url = user.get("REDIS_URL")
    if url and str(url).split("://", 1)[0] not in (
        "redis",
        "rediss",
        "unix",
        "redis+cluster",
        "rediss+cluster",
    ):
        errors.append(
            Error(
                f"QUOTAS['REDIS_URL'] has an unsupported scheme: {str(url).split('://', 1)[0]!r}.",
                hint="Use redis://, rediss://, unix://, redis+cluster:// or rediss+cluster://.",
                id="quotas.E003",
            )
        )
    try:
        ZoneInfo(conf.TIME_ZONE)
    except (ZoneInfoNotFoundError, ValueError):
        errors.append(
            Error(
                f"QUOTAS['TIME_ZONE'] {conf.TIME_ZONE!r} is not a known time zone.",
                hint="Use an IANA name such as 'UTC' or 'Europe/Paris'.",
                id="quotas.E004",
            )
        )
    for name in ("NUM_PROXIES", "LEASE_SECONDS", "MAX_REQUEST_BYTES", "DEFAULT_MAX_TOKENS"):
        value = user.get(name, DEFAULTS[name])
        if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
            errors.append(
                Error(
                    f"QUOTAS['{name}'] must be a non-negative number, not {value!r}.",
                    hint=f"The default is {DEFAULTS[name]!r}.",
                    id="quotas.E005",
                )
            )
    proxies = user.get("TRUSTED_PROXIES") or ()
    entries = [proxies] if isinstance(proxies, str) else list(proxies)
    invalid = [str(entry) for entry in entries if not parse_networks((str(entry),))]
    if invalid:
        errors.append(
            Error(
                f"QUOTAS['TRUSTED_PROXIES'] holds entries that are no address or network: "
                f"{', '.join(map(repr, invalid))}.",
                hint="List addresses or networks, e.g. ['10.0.0.0/8', '2001:db8::1'].",
                id="quotas.E008",
            )
        )
    if conf.PROVIDER not in PROVIDERS:
        errors.append(
            Error(
                f"QUOTAS['PROVIDER'] must be one of {', '.join(PROVIDERS)}, not {conf.PROVIDER!r}.",
                hint='"openai" calls the provider with OPENAI_API_KEY; "mock" answers locally.',
                id="quotas.E006",
            )
        )
    elif not provider_configured():
        errors.append(
            Error(
                "No AI provider is configured: OPENAI_API_KEY is not set, DEBUG is off and "
                "QUOTAS['PROVIDER'] is not 'mock'; /v1/ calls answer 503.",
                hint="Set OPENAI_API_KEY (and OPENAI_BASE_URL for another OpenAI-compatible "
                "provider), or QUOTAS['PROVIDER'] = 'mock' to serve the built-in mock.",
                id="quotas.E007",
            )
        )
    missing = [name for name in EMBEDDED_STORE if not url and find_spec(name) is None]
    if missing:
        errors.append(
            Error(
                "QUOTAS['REDIS_URL'] is not set and the embedded store is not installed "
                f"(no {', '.join(missing)}): every request would fail.",
                hint='Set REDIS_URL, or pip install "django-ai-quotas[embedded]" for a '
                "single-process development server.",
                id="quotas.E009",
            )
        )
    if not url and not settings.DEBUG:
        errors.append(
            Warning(
                "QUOTAS['REDIS_URL'] is not set: counters live in one process's memory.",
                hint="Set REDIS_URL so every app server process shares the same counters.",
                id="quotas.W001",
            )
        )
    return errors


@register(Tags.database)
def check_default_tier(
    app_configs: Any = None, databases: Any = None, **kwargs: Any
) -> list[CheckMessage]:
    """Users without a tier of their own get the default one; without it they are refused."""
    from .models import Tier

    alias = router.db_for_read(Tier)
    if databases is not None and alias not in databases:
        return []
    try:
        missing = not Tier.objects.using(alias).filter(is_default=True).exists()
    except DatabaseError:  # not migrated yet, or not reachable: nothing to tell
        return []
    if not missing:
        return []
    return [
        Error(
            "No tier is the default: users without a tier of their own (and anonymous "
            "callers, unless QUOTAS['ANONYMOUS_TIER'] names a tier) are refused with 403 "
            "no_tier.",
            hint="Mark one tier as the default in the admin, or with the staff API: "
            'PATCH /api/tiers/<slug>/ {"is_default": true}.',
            id="quotas.E010",
        )
    ]
