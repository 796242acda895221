"""The alert outbox: each alert's deliveries (email, signed webhooks), sent with retries.

A delivery row is written with its alert, in the same transaction, so an alert is never
lost between the call that crossed a threshold and the sender; `send_due` (the
`quota_send_alerts` command) sends what is due, and a failure is tried again later with
a doubling delay until `QUOTAS["ALERT_MAX_ATTEMPTS"]`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
import urllib.request
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import send_mail
from django.db import transaction
from django.utils import timezone

from .conf import conf
from .limit_kinds import BY_FIELD
from .models import Alert, AlertDelivery

logger = logging.getLogger("quotas")

SIGNATURE_HEADER = "X-Quotas-Signature"
TIMESTAMP_HEADER = "X-Quotas-Timestamp"
MAX_BACKOFF_SECONDS = 3600.0


def deliveries_for(alert: Alert) -> list[AlertDelivery]:
    """The unsaved deliveries of a new alert, as the settings ask for them."""
    now = timezone.now()
    addresses = list(conf.ALERT_EMAIL_STAFF)
    if conf.ALERT_EMAIL_USER and alert.user_id is not None:
        email = (
            get_user_model()
            .objects.filter(pk=alert.user_id)
            .values_list("email", flat=True)
            .first()
        )
        if email:
            addresses.insert(0, email)
    out = []
    if addresses:
        target = ", ".join(dict.fromkeys(addresses))
        out.append(AlertDelivery(alert=alert, channel=AlertDelivery.EMAIL, target=target))
    for url in conf.ALERT_WEBHOOKS:
        out.append(AlertDelivery(alert=alert, channel=AlertDelivery.WEBHOOK, target=url))
    for delivery in out:
        delivery.next_attempt_at = now
    return out


def payload(alert: Alert) -> dict[str, Any]:
    """What a webhook receives (JSON)."""
    return {
        "type": "quota.threshold_crossed",
        "id": alert.pk,
        "user_id": alert.user_id,
        "team_id": alert.team_id,
        "subject": alert.subject,
        "limit": alert.limit,
        "percent": alert.percent,
        "window": alert.window,
        "used": str(alert.used),
        "limit_value": str(alert.limit_value),
        "created_at": alert.created_at.isoformat(),
    }


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """`sha256=` and the hex HMAC-SHA256 of `timestamp`, a dot and the body, keyed by `secret`."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify_signature(
    secret: str, timestamp: str, body: bytes, received: str, *, tolerance: float = 300.0
) -> bool:
    """For a receiver: the signature is ours and the timestamp within `tolerance` seconds."""
    try:
        age = abs(time.time() - int(timestamp))
    except ValueError:
        return False
    return age <= tolerance and hmac.compare_digest(signature(secret, timestamp, body), received)


def _amount(value: Decimal, money: bool) -> str:
    return "$" + format(value.normalize(), "f") if money else f"{int(value):,}"


def _describe(alert: Alert) -> tuple[str, str]:
    kind = BY_FIELD.get(alert.limit)
    label = kind.label if kind else alert.limit
    who = f"team {alert.team}" if alert.team_id else f"user {alert.user}"
    subject = f"Quota alert: {label} at {alert.percent}% for {who}"
    used, limit = (
        _amount(value, kind is not None and kind.is_money)
        for value in (alert.used, alert.limit_value)
    )
    body = (
        f"{label} of {who} reached {alert.percent}% of its limit in window {alert.window}: "
        f"{used} of {limit}."
    )
    return subject, body


def _send(delivery: AlertDelivery) -> None:
    alert = delivery.alert
    if delivery.channel == AlertDelivery.EMAIL:
        subject, body = _describe(alert)
        sender = conf.ALERT_EMAIL_FROM or settings.DEFAULT_FROM_EMAIL
        targets = [address.strip() for address in delivery.target.split(",")]
        send_mail(subject, body, sender, targets)
        return
    content = json.dumps(payload(alert), sort_keys=True).encode()
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: signature(conf.ALERT_WEBHOOK_SECRET, timestamp, content),
    }
    request = urllib.request.Request(delivery.target, data=content, headers=headers)
    # A status other than 2xx raises HTTPError; an unreachable receiver, URLError.
    with urllib.request.urlopen(request, timeout=conf.ALERT_WEBHOOK_TIMEOUT) as response:
        if not 200 <= response.status < 300:
            raise RuntimeError(f"HTTP {response.status} from the receiver")


def backoff(attempts: int) -> float:
    """Seconds before the next try after `attempts` failed ones."""
    return float(min(conf.ALERT_RETRY_SECONDS * 2 ** (attempts - 1), MAX_BACKOFF_SECONDS))


def send_due(*, batch: int = 100) -> tuple[int, int]:
    """Send the deliveries that are due, `batch` at a time; (sent, failed) this run.

    Rows are locked while they are sent (skipping those another sender holds), so senders
    may run side by side without sending one twice.
    """
    sent = failed = 0
    while True:
        failed_before = failed
        with transaction.atomic():
            due = list(
                AlertDelivery.objects.select_for_update(skip_locked=True, of=("self",))
                .select_related("alert__user", "alert__team")
                .filter(state=AlertDelivery.PENDING, next_attempt_at__lte=timezone.now())
                .order_by("next_attempt_at")[:batch]
            )
            for delivery in due:
                delivery.attempts += 1
                try:
                    _send(delivery)
                except Exception as exc:
                    failed += 1
                    delivery.last_error = f"{type(exc).__name__}: {exc}"[:500]
                    if delivery.attempts >= conf.ALERT_MAX_ATTEMPTS:
                        delivery.state = AlertDelivery.FAILED
                        logger.error("quotas: alert delivery %s gave up: %s", delivery, exc)
                    else:
                        wait = timedelta(seconds=backoff(delivery.attempts))
                        delivery.next_attempt_at = timezone.now() + wait
                        logger.warning("quotas: alert delivery %s failed: %s", delivery, exc)
                else:
                    sent += 1
                    delivery.state = AlertDelivery.SENT
                    delivery.sent_at = timezone.now()
                    delivery.last_error = ""
                delivery.save(
                    update_fields=["attempts", "state", "next_attempt_at", "sent_at", "last_error"]
                )
        if len(due) < batch or failed > failed_before:
            return sent, failed
