"""What a metered call can raise: every one a `QuotaError`, each with its OpenAI answer."""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from .conf import conf
from .denials import is_retryable, message

if TYPE_CHECKING:
    from .engine import Decision, Limit, Usage


class QuotaError(Exception):
    """Base of every error of the quota layer; `status` and `code` shape the HTTP answer."""

    status = 500
    type = "server_error"
    code: str | None = None
    param: str | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def headers(self) -> dict[str, str]:
        return {}


class QuotaExceeded(QuotaError):
    """A limit ran out; nothing was charged. `limit` names it, e.g. "tokens_per_day".

    `retryable` is False for a day, month or spend budget: it answers with
    `x-should-retry: false`, so SDKs do not retry until it resets.
    """

    status = 429
    code: str

    def __init__(
        self,
        decision: Decision,
        *,
        limit: str,
        code: str,
        message: str,
        limits: Iterable[Limit] = (),
    ) -> None:
        super().__init__(message)
        self.decision = decision
        self.limits = tuple(limits)
        self.limit = limit
        self.code = code
        self.type = "insufficient_quota" if code == "insufficient_quota" else "requests"
        self.retryable = code != "insufficient_quota"
        self.retry_after = max(1, math.ceil(decision.retry_after))
        self.resets_at = datetime.fromtimestamp(
            decision.now_us / 1_000_000 + decision.retry_after, tz=UTC
        )

    @classmethod
    def from_decision(
        cls, decision: Decision, *, limits: Iterable[Limit] = (), asked: Usage | None = None
    ) -> QuotaExceeded:
        """Which limit ran out, how it is answered, and when it resets. `limits` (the
        policy's) show rates per minute; `asked` is what the request needed."""
        limits = tuple(limits)
        code = "rate_limit_exceeded" if is_retryable(decision) else "insufficient_quota"
        text = message(decision, limits=limits, asked=asked, time_zone=conf.TIME_ZONE)
        return cls(
            decision, limit=decision.denied_by or "a limit", code=code, message=text, limits=limits
        )

    def headers(self) -> dict[str, str]:
        from .headers import rate_limit_headers

        return rate_limit_headers(self.decision, self.limits)


class QuotaBlocked(QuotaError):
    """Staff blocked this account's quota."""

    status = 403
    type = "permission_error"
    code = "blocked"


class NoTier(QuotaError):
    """No tier applies to this account and no tier is the default: refused, never unlimited."""

    status = 403
    type = "permission_error"
    code = "no_tier"

    def __init__(
        self,
        message: str = "No quota tier applies to this account and there is no default tier; "
        "ask the service's staff to assign one.",
    ) -> None:
        super().__init__(message)


class ProviderBusy(QuotaError):
    """The model is at the provider's own limit (or backing off); nothing was charged."""

    status = 503
    code = "upstream_busy"

    def __init__(self, message: str, *, retry_after: int, model: str) -> None:
        super().__init__(message)
        self.retry_after = max(1, retry_after)
        self.model = model

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class QuotaUnavailable(QuotaError):
    """The counters cannot be reached and `QUOTAS["FAIL_OPEN"]` is off."""

    status = 503
    code = "quota_unavailable"

    def __init__(self, message: str = "Quota counters are unavailable; try again shortly.") -> None:
        super().__init__(message)

    def headers(self) -> dict[str, str]:
        return {"Retry-After": "1"}


class InvalidRequest(QuotaError):
    """The call cannot be planned as asked; `param` names the offending parameter."""

    status = 400
    type = "invalid_request_error"

    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.param = param
        self.code = code
