from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from quotas.alert_outbox import send_due


class Command(BaseCommand):
    help = (
        "Send the alert emails and webhooks that are due; failed ones are tried again at "
        "a later run, with a doubling delay. Run it every minute (cron, a systemd timer)."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        sent, failed = send_due()
        self.stdout.write(f"Sent {sent} alert deliveries; {failed} failed (retried later).")
