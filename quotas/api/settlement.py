"""Answers whose call is settled after they are sent: in the response's `close()`.

WSGI servers call `close()` once the body is written, Django's ASGI handler once the last
body message is sent; so the settlement's Redis call and ledger row are off the client's
wait. Until then the reservation stands charged in Redis: a process that dies between
the two has charged the whole worst case, never given a free call.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from django.http import JsonResponse
from rest_framework.response import Response

logger = logging.getLogger("quotas")

Settle = Callable[[], Any]


class SettlesOnClose:
    """Runs `settle` once, when the server closes the response; a failure is logged and
    never reaches the answer already sent."""

    settle: Settle | None = None

    def __init__(self, data: Any, *, settle: Settle, headers: dict[str, str]) -> None:
        super().__init__(data, headers=headers)  # type: ignore[call-arg]
        self.settle = settle

    def close(self) -> None:
        settle, self.settle = self.settle, None
        if settle is not None:
            try:
                settle()
            except Exception:
                logger.exception(
                    "quotas: settling a call after its answer failed; its reservation stays charged"
                )
        super().close()  # type: ignore[misc]


class SettledResponse(SettlesOnClose, Response):
    """A DRF answer settled once sent."""


class SettledJsonResponse(SettlesOnClose, JsonResponse):
    """A plain JSON answer (the async views) settled once sent."""
