"""What a metered call can raise: every one a `QuotaError`, each with its OpenAI answer."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from .limit_kinds import kind_of

if TYPE_CHECKING:
    from .engine import Decision


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
    """A limit ran out; nothing was charged. `limit` names it, e.g. "tokens_per_day"."""

    status = 429
    code: str

    def __init__(self, decision: Decision, *, limit: str, code: str, message: str) -> None:
        super().__init__(message)
        self.decision = decision
        self.limit = limit
        self.code = code
        self.type = "insufficient_quota" if code == "insufficient_quota" else "requests"
        self.retry_after = max(1, math.ceil(decision.retry_after))
        self.resets_at = datetime.fromtimestamp(
            decision.now_us / 1_000_000 + decision.retry_after, tz=UTC
        )

    @classmethod
    def from_decision(cls, decision: Decision) -> QuotaExceeded:
        """Which limit ran out, how it is answered, and when it resets."""
        name = decision.denied_by or "a limit"
        state = next((s for s in decision.states if s.name == name), None)
        wait = max(1, math.ceil(decision.retry_after))
        kind = None if state is None else kind_of(state.name, state.code)
        is_rate = kind is None or kind.is_rate
        code = "rate_limit_exceeded" if is_rate else "insufficient_quota"
        if state is not None and kind is not None and kind.period == "in_flight":
            message = (
                f"Too many concurrent requests: your limit {name} is {state.limit}. "
                f"Retry after {wait} s."
            )
        elif is_rate:
            message = f"Rate limit reached for {name}. Retry after {wait} s."
        else:
            limit: object = state.limit if state else "?"
            if state is not None and kind is not None and kind.is_money:
                limit = f"${int(state.limit) / 1_000_000:.2f}"
            message = (
                f"You exceeded your quota: {name} ({limit}) is used up. It resets in {wait} s."
            )
        return cls(decision, limit=name, code=code, message=message)

    def headers(self) -> dict[str, str]:
        from .headers import rate_limit_headers

        return rate_limit_headers(self.decision)


class QuotaBlocked(QuotaError):
    """Staff blocked this account's quota."""

    status = 403
    type = "permission_error"
    code = "blocked"


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
