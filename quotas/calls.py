"""The quota lifecycle of one AI call: plan, reserve, (the caller calls), settle or refund.

`reserve(user, ...)` applies every tier rule (blocked, default and allowed models, the
output cap, the whole-budget check, the fallback model, the provider's limits and
backoff) and reserves the worst case; the HTTP views and the users' own code both go
through it.
"""

from __future__ import annotations

import logging
from collections.abc import Generator
from types import TracebackType
from typing import Any

from asgiref.sync import sync_to_async

from . import policy, upstream
from .database import in_orm_thread, without_io_if_cached
from .engine import CountersUnavailable, Decision, Usage
from .exceptions import InvalidRequest, ProviderBusy, QuotaExceeded, QuotaUnavailable
from .fallback import serving_model
from .headers import rate_limit_headers
from .models import AIModel, APIKey
from .planning import MAX_TOKENS, Plan, plan_call
from .services import Grant, service
from .signals import quota_exceeded
from .tokens import count_text_tokens
from .usage import TokenUsage, normalise_usage

logger = logging.getLogger("quotas")

# The request parameters `reserve` takes by name; the rest of a body passes through.
RESERVE_ARGUMENTS = ("model", "messages", "tools", "max_tokens", "n")
OUTPUT_CAPS = ("max_tokens", "max_completion_tokens", "max_output_tokens")


def reserve_arguments(body: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of `reserve` / `areserve` for a Chat Completions body."""
    named = {name: body.get(name) for name in RESERVE_ARGUMENTS}
    return {**named, **{k: v for k, v in body.items() if k not in RESERVE_ARGUMENTS}}


def _user_id(user: Any) -> int:
    if isinstance(user, int) and not isinstance(user, bool):
        return user
    pk = getattr(user, "pk", None)
    if pk is None or not getattr(user, "is_authenticated", True):
        raise InvalidRequest("A metered call needs a saved, authenticated user.", "user", "no_user")
    return int(pk)


def _quota_for(user: Any, user_id: int, key: Any = None) -> policy.Quota:
    if getattr(user, "pk", None) is None:
        from django.contrib.auth import get_user_model

        user = get_user_model()(pk=user_id)
    if key is not None:
        if not isinstance(key, APIKey) or key.user_id != user_id:
            raise InvalidRequest("'key' must be an API key of this user.", "key", "invalid_key")
        return policy.quota_for_key(user, key)
    return policy.quota_for_user(user)


class MeteredCall:
    """One reserved AI call. Use it as a context manager, or settle or refund it yourself.

    An exception leaving the `with` block refunds; leaving it normally without `settle`
    charges the whole reservation.
    """

    def __init__(self, user_id: int, quota: policy.Quota, plan: Plan, spend: int) -> None:
        self.user_id = user_id
        self.quota = quota
        self.plan = plan
        self.requested_model = plan.model.name
        self.served: AIModel = plan.model
        self.spend = spend
        self.decision: Decision | None = None
        self.grant: Grant | None = None
        self.done = False
        # Whether the tier's fallback model may serve this call (not for embeddings).
        self.may_fall_back = True

    # what the caller reads ------------------------------------------------------------

    @property
    def model(self) -> str:
        """The model to call: the asked one, the tier's default, or the fallback."""
        return self.served.name

    @property
    def downgraded(self) -> bool:
        return self.served.name != self.requested_model

    @property
    def max_tokens(self) -> int:
        return self.plan.max_tokens

    @property
    def prompt_tokens(self) -> int:
        """The estimated input tokens reserved."""
        return self.plan.prompt_tokens

    @property
    def reserved_tokens(self) -> int:
        return self.plan.worst_tokens

    def provider_request(self, body: dict[str, Any]) -> dict[str, Any]:
        """`body` as the provider gets it: the served model and exactly one output cap
        (the one that was sent, or max_tokens)."""
        send = {k: v for k, v in body.items() if k not in OUTPUT_CAPS}
        send.update({"model": self.model, self.plan.output_param: self.max_tokens})
        return send

    def headers(self) -> dict[str, str]:
        """The rate-limit headers of this call's decision."""
        if self.decision is None:
            return {}
        return rate_limit_headers(self.decision, self.quota.named_limits())

    # the end of the call --------------------------------------------------------------

    def settle(
        self,
        usage: Any = None,
        *,
        prompt_tokens: int | None = None,
        completion_tokens: int | None = None,
        completion_text: str | None = None,
    ) -> TokenUsage:
        """Charge what the call really used: an OpenAI usage object or dict, or keywords.

        Figures missing from both are our own count: the reserved prompt estimate, and
        `completion_text` counted with the model's tokenizer (else nothing).
        """
        final = self.final_usage(
            usage,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            completion_text=completion_text,
        )
        settlement = self._settlement(final)
        if settlement is not None:
            service.settle(self.grant, **settlement)  # type: ignore[arg-type]
        return final

    def final_usage(
        self,
        usage: Any = None,
        *,
        prompt_tokens: int | None = None,
        completion_tokens: int | None = None,
        completion_text: str | None = None,
    ) -> TokenUsage:
        """The usage `settle` charges for these arguments."""
        counted = normalise_usage(usage)
        prompt = _first_count(prompt_tokens, counted.prompt_tokens, self.plan.prompt_tokens)
        completion = _first_count(completion_tokens, counted.completion_tokens, None)
        if completion is None:
            text = completion_text or ""
            completion = count_text_tokens(text, self.served.name) if text else 0
        return TokenUsage(prompt, completion, counted.cached_tokens, counted.reasoning_tokens)

    def refund(self) -> None:
        """The call did not happen: give everything back."""
        if self._refunding():
            service.refund(self.grant)  # type: ignore[arg-type]

    def _refunding(self) -> bool:
        if self.done:
            return False
        self.done = True
        return self.grant is not None

    @property
    def whole_reservation(self) -> TokenUsage:
        return TokenUsage(self.plan.prompt_tokens, self.plan.worst_tokens - self.plan.prompt_tokens)

    def charge_reservation(self) -> None:
        """Charge the whole worst case (the call's usage is unknown)."""
        settlement = self._settlement(self.whole_reservation)
        if settlement is not None:
            service.settle(self.grant, **settlement)  # type: ignore[arg-type]

    def _settlement(self, usage: TokenUsage) -> dict[str, Any] | None:
        """What the service settles for `usage`; None when there is nothing (left) to do."""
        if self.done:
            logger.warning("quotas: call of user %s was already settled", self.user_id)
            return None
        self.done = True
        if self.grant is None:
            return None
        prompt = min(usage.prompt_tokens, MAX_TOKENS)
        completion = min(usage.completion_tokens, MAX_TOKENS)
        # The parts the provider reported, never more than the whole they are part of.
        cached = min(usage.cached_tokens or 0, prompt)
        reasoning = min(usage.reasoning_tokens or 0, completion)
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "cached_tokens": cached,
            "reasoning_tokens": reasoning,
            "cost": self.served.cost_micros(prompt, completion, cached),
            "model": self.served.name,
        }

    def _warn_unsettled(self) -> None:
        logger.warning(
            "quotas: a call of user %s (model %s) ended without settle; charged its whole "
            "reservation of %d tokens",
            self.user_id,
            self.served.name,
            self.plan.worst_tokens,
        )

    def __enter__(self) -> MeteredCall:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.done:
            return
        if exc_type is not None:
            self.refund()
            return
        self._warn_unsettled()
        self.charge_reservation()


def _first_count(*values: int | None) -> int | None:
    for value in values:
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return None


def reserve(
    user: Any,
    /,
    *,
    model: str | None = None,
    messages: list[Any] | None = None,
    tools: list[Any] | None = None,
    max_tokens: int | None = None,
    n: int = 1,
    tokens: int | None = None,
    key: Any = None,
    fallback: bool = True,
    **params: Any,
) -> MeteredCall:
    """Reserve one AI call's worst case for `user` under their tier; see MeteredCall.

    `key`, one of the user's API keys, adds that key's own limits (and, always, the
    user's team's) to the decision.

    `tokens` reserves exactly that many (e.g. an embedding's counted input) instead of
    the estimate; `fallback=False` never serves the tier's fallback model instead.
    Raises QuotaExceeded (nothing charged), QuotaBlocked, ProviderBusy, QuotaUnavailable
    or InvalidRequest.
    """
    call, catalogue = _planned(
        user,
        dict(model=model, messages=messages, tools=tools, max_tokens=max_tokens, n=n),
        tokens,
        params,
        key,
    )
    call.may_fall_back = fallback
    steps = _take(call, catalogue)
    reply: Any = None
    try:
        while True:
            step = steps.send(reply)
            if step[0] == "reserve":
                reply = service.reserve(call.user_id, call.quota, **step[1])
            elif step[0] == "refund":
                service.refund(step[1])
                reply = None
            elif step[0] == "exceeded":
                quota_exceeded.send(sender=MeteredCall, **step[1])
                reply = None
            else:
                service.record_denial(call.user_id, *step[1])
                reply = None
    except StopIteration:
        pass
    except CountersUnavailable:
        logger.error("quotas: Redis unreachable; refusing a call of user %s", call.user_id)
        raise QuotaUnavailable() from None
    _through_provider_limits(call)
    return call


def _planned(
    user: Any, asked: dict[str, Any], tokens: Any, params: dict[str, Any], key: Any = None
) -> tuple[MeteredCall, dict[str, AIModel]]:
    """The call planned under the user's quota, not reserved yet."""
    user_id = _user_id(user)
    quota = _quota_for(user, user_id, key)
    catalogue = policy.model_catalogue()
    plan = plan_call(quota, catalogue, tokens=tokens, params=params, **asked)
    completion_budget = plan.worst_tokens - plan.prompt_tokens
    call = MeteredCall(
        user_id, quota, plan, plan.model.cost_micros(plan.prompt_tokens, completion_budget)
    )
    return call, catalogue


# What the fallback choice asks of the service: ("reserve", kwargs) -> (decision, grant),
# ("refund", grant), ("record_denial", (decision, model)), ("exceeded", the signal's
# arguments: a refusal, or a soft tier's call let through).
TakeStep = tuple[str, Any]


def _take(call: MeteredCall, catalogue: dict[str, AIModel]) -> Generator[TakeStep, Any, None]:
    """Reserve for the asked model, or for the fallback when the caller runs low."""
    quota, plan = call.quota, call.plan
    completion_budget = plan.worst_tokens - plan.prompt_tokens

    def attempt(model: AIModel, record_denial: bool = True) -> TakeStep:
        call.served = model
        call.spend = model.cost_micros(plan.prompt_tokens, completion_budget)
        # The model's provider backoff is read in the same round trip.
        return (
            "reserve",
            {
                "model": model.name,
                "tokens": plan.worst_tokens,
                "spend": call.spend,
                "record_denial": record_denial,
                "watch": (upstream.subject(model.name),),
            },
        )

    fallback = catalogue.get(quota.fallback_model or "")
    can_degrade = bool(
        call.may_fall_back and quota.degrade_at_percent and fallback and fallback != plan.model
    )
    decision, grant = yield attempt(plan.model, record_denial=not can_degrade)
    charged = Usage(requests=1, tokens=plan.worst_tokens, spend=call.spend)
    if can_degrade and fallback is not None:
        if serving_model(quota, plan.model.name, decision, charged) != plan.model.name:
            # Running low: give this back and take the cheaper fallback's price instead.
            if grant is not None:
                yield ("refund", grant)
            decision, grant = yield attempt(fallback, record_denial=False)
            if grant is None:  # counted against the model the caller asked for
                yield ("record_denial", (decision, plan.model.name))
        elif grant is None:
            yield ("record_denial", (decision, plan.model.name))
    call.decision, call.grant = decision, grant
    if grant is None or grant.shadowed:
        limit = decision.denied_by if grant is None else grant.shadowed
        yield (
            "exceeded",
            {"user_id": call.user_id, "limit": limit, "decision": decision, "soft": bool(grant)},
        )
    if grant is None:
        raise QuotaExceeded.from_decision(
            decision, limits=quota.named_limits(), asked=Usage(1, plan.worst_tokens, call.spend)
        )


def _through_provider_limits(call: MeteredCall) -> None:
    """Wait for the model's provider limits (and backoff); refund and raise if too long."""
    served, decision = call.served, call.decision
    assert decision is not None
    if not upstream.needs_limiter(served, decision.watched_hold):
        return
    try:
        service.wait_for_provider(served, call.plan.worst_tokens)
    except upstream.UpstreamBusy as exc:
        call.refund()
        wait = max(1, int(exc.retry_after + 0.999))
        raise ProviderBusy(
            f"The model '{served.name}' is at the provider's limit; retry after {wait} s.",
            retry_after=wait,
            model=served.name,
        ) from None
    except CountersUnavailable:
        pass  # the provider's own limits still apply on its side


class AsyncMeteredCall:
    """`async with areserve(...) as call`: a MeteredCall whose Redis calls are made on
    `redis.asyncio`; planning (the quota, the catalogue, the prompt count) and the ledger
    row run in a worker thread, as Django's ORM needs."""

    def __init__(self, user: Any, kwargs: dict[str, Any]) -> None:
        self._user = user
        self._kwargs = kwargs
        self._call: MeteredCall | None = None

    @property
    def call(self) -> MeteredCall:
        if self._call is None:
            raise RuntimeError("Use `async with quotas.areserve(...) as call:` first.")
        return self._call

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.call, name)

    async def __aenter__(self) -> AsyncMeteredCall:
        kwargs = dict(self._kwargs)
        asked = {name: kwargs.pop(name, None) for name in RESERVE_ARGUMENTS}
        tokens = kwargs.pop("tokens", None)
        key = kwargs.pop("key", None)
        may_fall_back = kwargs.pop("fallback", True)
        call, catalogue = await without_io_if_cached(
            _planned, self._user, asked, tokens, kwargs, key
        )
        call.may_fall_back = bool(may_fall_back)
        steps = _take(call, catalogue)
        reply: Any = None
        try:
            while True:
                step = steps.send(reply)
                if step[0] == "reserve":
                    reply = await service.areserve(call.user_id, call.quota, **step[1])
                elif step[0] == "refund":
                    await service.arefund(step[1])
                    reply = None
                elif step[0] == "exceeded":
                    await quota_exceeded.asend(sender=MeteredCall, **step[1])
                    reply = None
                else:
                    await in_orm_thread(service.record_denial)(call.user_id, *step[1])
                    reply = None
        except StopIteration:
            pass
        except CountersUnavailable:
            logger.error("quotas: Redis unreachable; refusing a call of user %s", call.user_id)
            raise QuotaUnavailable() from None
        assert call.decision is not None
        if upstream.needs_limiter(call.served, call.decision.watched_hold):
            await sync_to_async(_through_provider_limits)(call)
        self._call = call
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        call = self._call
        if call is None or call.done:
            return
        if exc_type is not None:
            await self.refund()
            return
        call._warn_unsettled()
        await self._settle(call.whole_reservation)

    def headers(self) -> dict[str, str]:
        return self.call.headers()

    async def settle(
        self,
        usage: Any = None,
        *,
        prompt_tokens: int | None = None,
        completion_tokens: int | None = None,
        completion_text: str | None = None,
    ) -> TokenUsage:
        """As `MeteredCall.settle`."""
        final = self.call.final_usage(
            usage,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            completion_text=completion_text,
        )
        await self._settle(final)
        return final

    async def _settle(self, usage: TokenUsage) -> None:
        settlement = self.call._settlement(usage)
        if settlement is not None:
            await service.asettle(self.call.grant, **settlement)  # type: ignore[arg-type]

    async def refund(self) -> None:
        if self.call._refunding():
            await service.arefund(self.call.grant)  # type: ignore[arg-type]


def areserve(user: Any, /, **kwargs: Any) -> AsyncMeteredCall:
    """`reserve` for async code: `async with quotas.areserve(user, ...) as call:`."""
    return AsyncMeteredCall(user, kwargs)
