"""The caller-facing `/v1/` endpoints."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.http import HttpRequest
from django.views.decorators.csrf import csrf_exempt
from rest_framework.authentication import SessionAuthentication
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from .. import policy
from ..authentication import APIKeyAuthentication, request_key
from ..conf import conf
from ..denials import shown_limit
from ..engine import CountersUnavailable, Decision
from ..exceptions import NoTier, QuotaBlocked
from ..headers import add_rate_limit_headers, rate_limit_headers
from ..ledger import token_details
from ..limit_kinds import kind_of
from ..money import from_micros
from ..services import service
from ..throttling import DECISION_ATTR, LIMITS_ATTR
from .errors import counters_unavailable, exception_handler


class QuotaHeadersMixin:
    """Puts the rate-limit headers of the request's decision on the answer."""

    def finalize_response(self, request: Request, response: Any, *args: Any, **kwargs: Any) -> Any:
        response = super().finalize_response(request, response, *args, **kwargs)  # type: ignore[misc]
        decision = getattr(request._request, DECISION_ATTR, None)
        if decision is not None:
            limits = getattr(request._request, LIMITS_ATTR, ())
            add_rate_limit_headers(response, decision, limits)
        return response


class CallerAPIView(QuotaHeadersMixin, APIView):
    """A `/v1/` view: its own authentication and OpenAI-shaped errors, whatever the
    project's REST_FRAMEWORK settings say."""

    authentication_classes = [APIKeyAuthentication, SessionAuthentication]
    permission_classes = [IsAuthenticated]

    def get_exception_handler(self) -> Any:
        return exception_handler


def caller_quota(request: Request | HttpRequest) -> policy.Quota:
    """The caller's quota (with their key's limits); a blocked account (or team), or one
    no tier applies to, is refused."""
    quota = policy.quota_for_key(request.user, request_key(request))
    if quota.blocked:
        raise QuotaBlocked("This account's quota is blocked.")
    if quota.no_tier:
        raise NoTier()
    return quota


def read_usage(user: Any, quota: policy.Quota) -> Decision:
    """Where the caller's limits stand, charging nothing; raises CountersUnavailable."""
    return service.usage(user.pk, quota)


REFUSAL_HEADERS = frozenset({"Retry-After", "retry-after-ms", "x-should-retry"})


def usage_headers(decision: Decision, quota: policy.Quota) -> dict[str, str]:
    """Every limit's headers, read without charging anything (so nothing was refused)."""
    headers = rate_limit_headers(decision, quota.named_limits())
    return {name: value for name, value in headers.items() if name not in REFUSAL_HEADERS}


def _iso(now_us: int, after: float) -> str:
    moment = datetime.fromtimestamp(now_us / 1_000_000 + after, tz=UTC)
    return moment.isoformat().replace("+00:00", "Z")


def quota_report(quota: policy.Quota, decision: Decision) -> dict[str, Any]:
    """The caller's limits, usage, remaining and reset times; their team's and their key's
    too, and which limit of any level is nearest to running out."""
    levels: dict[str, dict[str, Any]] = {"": {}, "team": {}, "key": {}}
    nearest: tuple[float, str, str] | None = None
    policy_limits = quota.named_limits()
    for state in decision.states:
        level, _, name = state.name.rpartition(".")
        entry: dict[str, Any] = {
            "limit": state.limit,
            "used": state.used,
            "remaining": state.remaining,
            "reset_seconds": round(state.reset_after, 3),
            "resets_at": _iso(decision.now_us, state.reset_after),
        }
        kind = kind_of(name, state.code)
        if kind.period == "rate":  # the rate as set, per minute, and how many at once
            entry.update(limit=shown_limit(state, policy_limits), burst=state.limit)
            entry["per_minute"] = entry["limit"]
        if kind.is_money:
            entry.update(
                limit=str(from_micros(state.limit)),
                used=str(from_micros(state.used)),
                remaining=str(from_micros(state.remaining)),
                currency="USD",
            )
        if kind.period == "in_flight":
            entry.pop("reset_seconds")
            entry.pop("resets_at")
        levels.setdefault(level, {})[name] = entry
        share = 1.0 if state.limit == 0 else state.used / state.limit
        if nearest is None or share > nearest[0]:
            nearest = (share, level or "user", name)
    limits = levels[""]
    if quota.max_tokens_per_request is not None:
        limits["max_tokens_per_request"] = {"limit": quota.max_tokens_per_request}

    def usage(u: Any, window: Any) -> dict[str, Any]:
        return {
            "period": window.label if window else None,
            "requests": u.requests,
            "tokens": u.tokens,
            "spend": str(from_micros(u.spend)),
        }

    report: dict[str, Any] = {
        "object": "quota",
        "tier": {"slug": quota.tier_slug, "name": quota.tier_name},
        "blocked": quota.blocked,
        "time_zone": conf.TIME_ZONE,
        "limits": limits,
        "usage": {
            "today": usage(decision.day_usage, decision.day),
            "this_month": usage(decision.month_usage, decision.month),
        },
        "models": {
            "allowed": list(quota.allowed_models) or sorted(policy.model_catalogue()),
            "default": quota.default_model,
            "fallback": quota.fallback_model,
            "degrade_at_percent": quota.degrade_at_percent,
        },
    }
    if quota.team is not None:
        report["team"] = {"slug": quota.team_slug, "limits": levels["team"]}
    if quota.key is not None:
        report["key"] = {"limits": levels["key"]}
    if nearest is not None:
        report["nearest"] = {
            "level": nearest[1],
            "limit": nearest[2],
            "percent_used": round(nearest[0] * 100, 1),
        }
    return report


class QuotaView(CallerAPIView):
    """GET /v1/quota: the caller's effective limits, usage, remaining and reset times.

    Reading it charges none of the caller's limits.
    """

    throttle_classes: list[Any] = []

    def get(self, request: Request) -> Response:
        quota = caller_quota(request)
        try:
            decision = read_usage(request.user, quota)
        except CountersUnavailable:
            return counters_unavailable()
        report = quota_report(quota, decision)
        report["usage"]["today"].update(token_details(request.user.pk, decision.day))
        report["usage"]["this_month"].update(token_details(request.user.pk, decision.month))
        return Response(report, headers=usage_headers(decision, quota))


@csrf_exempt
def not_found(request: Any, *args: Any, **kwargs: Any) -> Any:
    """Unknown /v1/ paths answer in OpenAI's error shape, not an HTML page."""
    from django.http import JsonResponse

    body = {
        "error": {
            "message": f"Unknown request URL: {request.method} {request.path}.",
            "type": "invalid_request_error",
            "param": None,
            "code": "unknown_url",
        }
    }
    return JsonResponse(body, status=404)
