"""The alert outbox: emails through Django's mail backend, HMAC-signed webhooks to a live
receiver, retried with backoff after the receiver fails, and the sending command."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import StringIO
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core import mail
from django.core.management import call_command
from django.utils import timezone

from quotas import alerts
from quotas.alert_outbox import backoff, send_due, verify_signature
from quotas.models import Alert, AlertDelivery

SECRET = "whsec-test"


class Receiver:
    """A webhook receiver on a loopback port, answering the statuses it is given in turn."""

    def __init__(self) -> None:
        self.statuses: list[int] = []
        self.received: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append((dict(self.headers), body))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/quota"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
def user(db: None) -> Any:
    return get_user_model().objects.create_user("ada", email="ada@example.com")


def cross(user: Any, percent: int = 80) -> Alert:
    crossing = alerts.Crossing(
        user.pk,
        None,
        subject=f"u:{user.pk}",
        limit="tokens_per_day",
        percent=percent,
        window="20261202",
        used=Decimal(800),
        limit_value=Decimal(1000),
    )
    alerts.fired.clear()
    (alert,) = alerts.fire([crossing])
    return alert


def test_an_alert_is_emailed_to_the_user_and_the_staff(settings, user) -> None:
    settings.QUOTAS = {**settings.QUOTAS, "ALERT_EMAIL_STAFF": ["ops@example.com"]}
    cross(user)

    assert send_due() == (1, 0)

    (message,) = mail.outbox
    assert message.to == ["ada@example.com", "ops@example.com"]
    assert message.subject == "Quota alert: Tokens today at 80% for user ada"
    assert "window 20261202: 800 of 1,000." in message.body
    assert AlertDelivery.objects.get().state == AlertDelivery.SENT
    assert send_due() == (0, 0)  # sent once
    assert len(mail.outbox) == 1


def test_no_email_without_an_address(settings, user) -> None:
    settings.QUOTAS = {**settings.QUOTAS, "ALERT_EMAIL_USER": False}
    cross(user)
    assert not AlertDelivery.objects.exists()


def test_a_webhook_is_signed_and_retried_after_the_receiver_fails(settings, user, receiver) -> None:
    settings.QUOTAS = {
        **settings.QUOTAS,
        "ALERT_EMAIL_USER": False,
        "ALERT_WEBHOOKS": [receiver.url],
        "ALERT_WEBHOOK_SECRET": SECRET,
    }
    alert = cross(user)
    receiver.statuses = [503]

    assert send_due() == (0, 1)
    delivery = AlertDelivery.objects.get()
    assert (delivery.state, delivery.attempts) == (AlertDelivery.PENDING, 1)
    assert "503" in delivery.last_error
    assert delivery.next_attempt_at > timezone.now() + timedelta(seconds=25)
    assert send_due() == (0, 0)  # not due yet

    AlertDelivery.objects.update(next_attempt_at=timezone.now())
    assert send_due() == (1, 0)

    assert len(receiver.received) == 2
    headers, body = receiver.received[-1]
    timestamp, signature = headers["X-Quotas-Timestamp"], headers["X-Quotas-Signature"]
    expected = hmac.new(SECRET.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    assert signature == "sha256=" + expected.hexdigest()
    assert abs(time.time() - int(timestamp)) < 60
    assert verify_signature(SECRET, timestamp, body, signature)
    assert not verify_signature("another secret", timestamp, body, signature)
    assert not verify_signature(SECRET, timestamp, body + b" ", signature)
    payload = json.loads(body)
    assert payload["type"] == "quota.threshold_crossed"
    assert (payload["id"], payload["user_id"], payload["limit"], payload["percent"]) == (
        alert.pk,
        user.pk,
        "tokens_per_day",
        80,
    )
    delivery.refresh_from_db()
    assert (delivery.state, delivery.attempts, delivery.last_error) == ("sent", 2, "")


def test_an_old_signature_is_refused() -> None:
    body = b"{}"
    old = str(int(time.time()) - 3600)
    mac = hmac.new(SECRET.encode(), f"{old}.".encode() + body, hashlib.sha256).hexdigest()
    assert not verify_signature(SECRET, old, body, "sha256=" + mac)
    assert not verify_signature(SECRET, "not a time", body, "sha256=" + mac)


def test_a_delivery_gives_up_after_the_last_attempt(settings, user) -> None:
    settings.QUOTAS = {
        **settings.QUOTAS,
        "ALERT_EMAIL_USER": False,
        "ALERT_WEBHOOKS": ["http://127.0.0.1:9/unreachable"],
        "ALERT_MAX_ATTEMPTS": 2,
        "ALERT_WEBHOOK_TIMEOUT": 2,
    }
    cross(user)
    send_due()
    AlertDelivery.objects.update(next_attempt_at=timezone.now())
    send_due()

    delivery = AlertDelivery.objects.get()
    assert (delivery.state, delivery.attempts) == (AlertDelivery.FAILED, 2)
    assert send_due() == (0, 0)


def test_the_backoff_doubles_up_to_an_hour(settings) -> None:
    assert [backoff(n) for n in (1, 2, 3)] == [30, 60, 120]
    assert backoff(20) == 3600


def test_the_command_sends_what_is_due(user) -> None:
    cross(user)
    out = StringIO()
    call_command("quota_send_alerts", stdout=out)
    assert out.getvalue().strip() == "Sent 1 alert deliveries; 0 failed (retried later)."
    assert len(mail.outbox) == 1
