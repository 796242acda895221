"""DRF throttle applying the caller's tier request limits to any view."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Sequence
from typing import Any

from rest_framework.exceptions import APIException, PermissionDenied
from rest_framework.throttling import BaseThrottle

from . import policy
from .conf import Network, conf
from .engine import CountersUnavailable, Decision
from .exceptions import NoTier
from .headers import retry_after_seconds
from .models import APIKey
from .services import QuotaService, service
from .signals import quota_exceeded

logger = logging.getLogger("quotas")

DECISION_ATTR = "quota_decision"
LIMITS_ATTR = "quota_limits"  # the decision's limits, for the headers (rates per minute)


def client_ip(meta: dict[str, Any], num_proxies: int, trusted: Sequence[Network] = ()) -> str:
    """The caller's address, from X-Forwarded-For only as far as proxies are trusted.

    Each proxy appends the address it saw, so whatever a client writes further left is
    ignored. With `trusted` networks, the header is read only from a trusted peer, and the
    client is the rightmost hop that is not a trusted proxy; else the client is
    `num_proxies` entries from the right.
    """
    remote = meta.get("REMOTE_ADDR", "") or ""
    peer = parse_address(remote)
    hops = [h.strip() for h in meta.get("HTTP_X_FORWARDED_FOR", "").split(",") if h.strip()]
    if trusted:
        if peer is None or not is_trusted(peer, trusted):
            return peer or remote
        client = peer
        for hop in reversed(hops):
            address = parse_address(hop)
            if address is None:  # a hop the proxy could not name counts as the proxy
                break
            client = address
            if not is_trusted(address, trusted):
                break
        return client
    if num_proxies > 0 and len(hops) >= num_proxies:
        forwarded = parse_address(hops[-num_proxies])
        # A hop the proxy could not name ("unknown", garbage) counts as the proxy.
        if forwarded is not None:
            return forwarded
    return peer or remote


def is_trusted(address: str, trusted: Sequence[Network]) -> bool:
    ip = ipaddress.ip_address(address)
    if ip.version == 6 and ip.ipv4_mapped:  # a dual-stack socket's view of an IPv4 peer
        ip = ip.ipv4_mapped
    return any(ip in network for network in trusted)


def parse_address(text: str) -> str | None:
    """The IP address in `text`, as proxies write it: `1.2.3.4`, `1.2.3.4:5555`,
    `2001:db8::1`, `[2001:db8::1]` or `[2001:db8::1]:443`; None if there is none."""
    text = text.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]  # IPv4 with a port
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def ip_subject(address: str) -> str:
    """IPv4 by address; IPv6 by /64, so one host cannot rotate through its prefix."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return "ip:unknown"
    if ip.version == 6:
        if ip.ipv4_mapped:
            return f"ip:{ip.ipv4_mapped}"
        return f"ip:{ipaddress.ip_network(f'{ip}/64', strict=False).network_address}/64"
    return f"ip:{ip}"


def refuse_without_tier(quota: policy.Quota) -> None:
    """No tier applies (there is no default tier): refused, never unlimited."""
    if quota.no_tier:
        raise PermissionDenied(NoTier().message, code=NoTier.code)


class CountersDown(APIException):
    status_code = 503
    default_detail = "Quota counters are unavailable; try again shortly."
    default_code = "quota_unavailable"


class TierRateThrottle(BaseThrottle):
    """Requests per minute with burst and requests per day, from the caller's tier.

    Users are counted by id; anonymous callers by client IP with `QUOTAS["ANONYMOUS_TIER"]`.
    Subclasses may override `get_subject` to count callers another way.
    """

    service: QuotaService = service

    def __init__(self) -> None:
        self.decision: Decision | None = None

    def get_subject(self, request: Any) -> tuple[str, policy.Quota, bool]:
        """(subject, quota, is a user) for this request."""
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            key = getattr(request, "auth", None)
            quota = policy.quota_for_key(user, key if isinstance(key, APIKey) else None)
            if quota.blocked:
                raise PermissionDenied("This account's quota is blocked.", code="blocked")
            refuse_without_tier(quota)
            return quota.subject(user.pk), quota, True
        address = client_ip(request.META, conf.NUM_PROXIES, conf.TRUSTED_PROXIES)
        quota = policy.quota_for_anonymous()
        refuse_without_tier(quota)
        return ip_subject(address), quota, False

    def allow_request(self, request: Any, view: Any) -> bool:
        subject, quota, is_user = self.get_subject(request)
        try:
            decision = self.service.check_request(subject, quota, track_usage=is_user)
        except CountersUnavailable as exc:
            logger.error("quotas: Redis unreachable (%s); FAIL_OPEN=%s", exc, conf.FAIL_OPEN)
            if conf.FAIL_OPEN:
                return True
            raise CountersDown() from exc
        self.decision = decision
        if decision.reasons:  # refused, or a soft tier's request let through
            quota_exceeded.send(
                sender=type(self),
                user_id=request.user.pk if is_user else None,
                limit=decision.denied_by or decision.reasons[0],
                decision=decision,
                soft=decision.allowed,
            )
        raw = getattr(request, "_request", request)
        setattr(raw, DECISION_ATTR, decision)
        setattr(raw, LIMITS_ATTR, quota.named_limits(budgets=False))
        return decision.allowed

    def wait(self) -> float:
        """Seconds until a retry can pass: always a number, at least 1."""
        if self.decision is None:
            return 1.0
        return float(retry_after_seconds(self.decision))
