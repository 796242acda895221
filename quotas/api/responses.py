"""POST /v1/responses: OpenAI's Responses API, JSON and the Responses event stream."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

from rest_framework.request import Request
from rest_framework.response import Response

from .. import calls, responses, upstream
from ..authentication import request_key
from ..throttling import DECISION_ATTR, LIMITS_ATTR
from .chat_input import parse_body
from .forwarding import DOWNGRADE_HEADER, UPSTREAM_ERRORS, event_stream, read_body, upstream_error
from .views import CallerAPIView

logger = logging.getLogger("quotas")


def server_event(event: dict[str, Any]) -> bytes:
    return f"event: {event.get('type')}\ndata: {json.dumps(event)}\n\n".encode()


class ResponseStreamSettlement:
    """The event stream of a streamed response; settles when exhausted or closed.

    Settled from `response.usage` of the final event, else (the provider's stream broke,
    or the client went away) the prompt estimate and the text delivered so far.
    """

    def __init__(self, events: Iterator[dict[str, Any]], call: calls.MeteredCall) -> None:
        self.events = events
        self.call = call
        self.meter = responses.EventMeter()
        self.sequence = -1
        self.settled = False

    def __iter__(self) -> Iterator[bytes]:
        end = b""
        try:
            for event in self.events:
                self.meter.keep(event)
                number = event.get("sequence_number")
                self.sequence = number if isinstance(number, int) else self.sequence + 1
                yield server_event(event)
        except UPSTREAM_ERRORS as exc:
            error = {
                "type": "error",
                "code": "upstream_error",
                "message": f"The model provider failed mid-stream: {exc}",
                "param": None,
                "sequence_number": self.sequence + 1,
            }
            end = server_event(error)
        finally:
            self.close()
        # Settled before the client reads the end, so its next request finds the lease free.
        if end:
            yield end

    def close(self) -> None:
        if self.settled:
            return
        self.settled = True
        close = getattr(self.events, "close", None)
        if close is not None:
            try:
                close()
            except Exception:  # the provider's connection is going away anyway
                logger.debug("quotas: closing the provider stream failed", exc_info=True)
        self.call.settle(self.meter.usage, completion_text=self.meter.text)


class ResponsesView(CallerAPIView):
    """The Responses API behind the caller's quota: reserve, call, settle."""

    throttle_classes: list[Any] = []  # the reservation itself applies the request limits
    parser_classes: list[Any] = []  # the raw body is read and checked here

    def post(self, request: Request) -> Any:
        body = parse_body(read_body(request))
        call = calls.reserve(
            request.user, key=request_key(request), **responses.reserve_arguments(body)
        )
        setattr(request._request, DECISION_ATTR, call.decision)
        setattr(request._request, LIMITS_ATTR, call.quota.named_limits())
        headers = {DOWNGRADE_HEADER: call.requested_model} if call.downgraded else {}
        forward = responses.provider_request(call, body)
        if body.get("stream"):
            return self._stream(forward, call, headers)
        try:
            reply = upstream.responses(forward, call.served.provider)
        except UPSTREAM_ERRORS as exc:
            call.refund()
            return upstream_error(exc, call.model)
        call.settle(reply.get("usage"), completion_text=responses.output_text(reply))
        return Response(reply, headers=headers)

    def _stream(
        self, forward: dict[str, Any], call: calls.MeteredCall, headers: dict[str, str]
    ) -> Any:
        try:
            events = upstream.responses_stream(forward, call.served.provider)
            first = next(events, None)
        except UPSTREAM_ERRORS as exc:
            call.refund()
            return upstream_error(exc, call.model)

        def replay() -> Iterator[dict[str, Any]]:
            if first is not None:
                yield first
            yield from events

        return event_stream(ResponseStreamSettlement(replay(), call), headers, self.request)
