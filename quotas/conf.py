"""The `QUOTAS` setting: one dict merged over these defaults, read on every access."""

from __future__ import annotations

import ipaddress
from decimal import Decimal
from functools import lru_cache
from typing import Any

from django.conf import settings

DEFAULTS: dict[str, Any] = {
    # Redis for the counters: redis://, rediss://, unix:// or redis+cluster://.
    # None: the embedded in-process store (one process only; development).
    "REDIS_URL": None,
    # Prefix of every Redis key.
    "KEY_PREFIX": "quotas",
    # Time zone of the day and month windows; None: settings.TIME_ZONE.
    "TIME_ZONE": None,
    # Trusted reverse proxies in front of the app; the client IP is read from
    # X-Forwarded-For that many hops from the right. 0: REMOTE_ADDR only.
    "NUM_PROXIES": 0,
    # Addresses or networks of the reverse proxies whose X-Forwarded-For is believed; the
    # client is the rightmost hop that is not one of them. Empty: NUM_PROXIES decides.
    "TRUSTED_PROXIES": (),
    # Slug of the tier for anonymous callers (limited by IP); None: the default tier.
    "ANONYMOUS_TIER": None,
    # With Redis unreachable: True lets rate limits pass, False refuses with 503.
    "FAIL_OPEN": True,
    # Seconds a reservation holds its concurrency slot if never settled (a crashed worker).
    "LEASE_SECONDS": 300,
    # Seconds a process may use a cached policy before checking for changes.
    "POLICY_CACHE_SECONDS": 1.0,
    # Organisation-wide spend cap per calendar month, in USD; None: no cap.
    "ORG_SPEND_PER_MONTH": None,
    # Seconds a chat request may wait for the provider's own limits to allow it.
    "UPSTREAM_MAX_WAIT": 5.0,
    # Largest accepted request body, in bytes.
    "MAX_REQUEST_BYTES": 1_048_576,
    # max_tokens assumed when a request gives none (capped by the tier).
    "DEFAULT_MAX_TOKENS": 1024,
    # Keep prompts and completions (never by default).
    "STORE_PROMPTS": False,
    # Seconds the provider may take before a 504.
    "UPSTREAM_TIMEOUT": 60.0,
    # "openai": the OpenAI SDK with OPENAI_API_KEY / OPENAI_BASE_URL (without a key, the
    # built-in mock only while DEBUG is on); "mock": always the built-in mock provider.
    "PROVIDER": "openai",
    # Percents of a limit that alert when a tier or team has no alert rules of its own.
    "ALERT_THRESHOLDS": (80, 100),
    # Email an alert to the user it is about (when they have an address).
    "ALERT_EMAIL_USER": True,
    # Addresses that get every alert by email (staff).
    "ALERT_EMAIL_STAFF": (),
    # The sender of alert emails; None: settings.DEFAULT_FROM_EMAIL.
    "ALERT_EMAIL_FROM": None,
    # URLs every alert is POSTed to, signed with ALERT_WEBHOOK_SECRET.
    "ALERT_WEBHOOKS": (),
    "ALERT_WEBHOOK_SECRET": "",
    # Seconds a webhook receiver may take to answer.
    "ALERT_WEBHOOK_TIMEOUT": 10.0,
    # Tries of one delivery before it is marked failed, and the first retry's delay in
    # seconds (doubled after each failure, at most an hour).
    "ALERT_MAX_ATTEMPTS": 8,
    "ALERT_RETRY_SECONDS": 30.0,
    # Addresses or networks allowed to read /metrics (loopback only by default).
    "METRICS_ALLOWED_NETWORKS": ("127.0.0.0/8", "::1"),
}

PROVIDERS = ("openai", "mock")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@lru_cache(maxsize=8)
def parse_networks(entries: tuple[str, ...]) -> tuple[Network, ...]:
    """The networks named by `entries` (an address is a network of one); the ones that are
    not addresses or networks are left out (system check quotas.E008 names them)."""
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            continue
    return tuple(networks)


class Settings:
    """Typed access to `settings.QUOTAS`; reads Django settings on every access."""

    def _get(self, name: str) -> Any:
        user = getattr(settings, "QUOTAS", None) or {}
        return user.get(name, DEFAULTS[name])

    @property
    def REDIS_URL(self) -> str | None:
        return self._get("REDIS_URL") or None

    @property
    def KEY_PREFIX(self) -> str:
        return str(self._get("KEY_PREFIX"))

    @property
    def TIME_ZONE(self) -> str:
        return str(self._get("TIME_ZONE") or settings.TIME_ZONE or "UTC")

    @property
    def NUM_PROXIES(self) -> int:
        return int(self._get("NUM_PROXIES"))

    @property
    def TRUSTED_PROXIES(self) -> tuple[Network, ...]:
        value = self._get("TRUSTED_PROXIES") or ()
        entries = (value,) if isinstance(value, str) else value
        return parse_networks(tuple(str(entry) for entry in entries))

    @property
    def ANONYMOUS_TIER(self) -> str | None:
        value = self._get("ANONYMOUS_TIER")
        return str(value) if value else None

    @property
    def FAIL_OPEN(self) -> bool:
        return bool(self._get("FAIL_OPEN"))

    @property
    def LEASE_SECONDS(self) -> float:
        return float(self._get("LEASE_SECONDS"))

    @property
    def POLICY_CACHE_SECONDS(self) -> float:
        return float(self._get("POLICY_CACHE_SECONDS"))

    @property
    def ORG_SPEND_PER_MONTH(self) -> Decimal | None:
        value = self._get("ORG_SPEND_PER_MONTH")
        return None if value is None else Decimal(str(value))

    @property
    def UPSTREAM_MAX_WAIT(self) -> float:
        return float(self._get("UPSTREAM_MAX_WAIT"))

    @property
    def MAX_REQUEST_BYTES(self) -> int:
        return int(self._get("MAX_REQUEST_BYTES"))

    @property
    def DEFAULT_MAX_TOKENS(self) -> int:
        return int(self._get("DEFAULT_MAX_TOKENS"))

    @property
    def STORE_PROMPTS(self) -> bool:
        return bool(self._get("STORE_PROMPTS"))

    @property
    def UPSTREAM_TIMEOUT(self) -> float:
        return float(self._get("UPSTREAM_TIMEOUT"))

    @property
    def PROVIDER(self) -> str:
        return str(self._get("PROVIDER"))

    @property
    def ALERT_THRESHOLDS(self) -> tuple[int, ...]:
        return tuple(sorted({int(p) for p in self._get("ALERT_THRESHOLDS") or ()}))

    @property
    def ALERT_EMAIL_USER(self) -> bool:
        return bool(self._get("ALERT_EMAIL_USER"))

    @property
    def ALERT_EMAIL_STAFF(self) -> tuple[str, ...]:
        return _strings(self._get("ALERT_EMAIL_STAFF"))

    @property
    def ALERT_EMAIL_FROM(self) -> str | None:
        value = self._get("ALERT_EMAIL_FROM")
        return str(value) if value else None

    @property
    def ALERT_WEBHOOKS(self) -> tuple[str, ...]:
        return _strings(self._get("ALERT_WEBHOOKS"))

    @property
    def ALERT_WEBHOOK_SECRET(self) -> str:
        return str(self._get("ALERT_WEBHOOK_SECRET") or "")

    @property
    def ALERT_WEBHOOK_TIMEOUT(self) -> float:
        return float(self._get("ALERT_WEBHOOK_TIMEOUT"))

    @property
    def ALERT_MAX_ATTEMPTS(self) -> int:
        return max(1, int(self._get("ALERT_MAX_ATTEMPTS")))

    @property
    def ALERT_RETRY_SECONDS(self) -> float:
        return float(self._get("ALERT_RETRY_SECONDS"))

    @property
    def METRICS_ALLOWED_NETWORKS(self) -> tuple[Network, ...]:
        return parse_networks(_strings(self._get("METRICS_ALLOWED_NETWORKS")))


def _strings(value: Any) -> tuple[str, ...]:
    """A setting given as one string or a sequence of them."""
    entries = (value,) if isinstance(value, str) else (value or ())
    return tuple(str(entry) for entry in entries if str(entry).strip())


conf = Settings()
