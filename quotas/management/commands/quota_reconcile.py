from __future__ import annotations

import sys
import time
from typing import Any

import redis
from django.core.management.base import BaseCommand, CommandError, CommandParser
from redis.exceptions import RedisClusterException
from tqdm import tqdm

from quotas.engine import CountersUnavailable
from quotas.money import from_micros
from quotas.reconcile import WindowCheck, users_to_check
from quotas.services import service

HEADER = ("user", "window", "field", "redis", "ledger", "in flight", "drift")


def amount(field: str, value: int, *, signed: bool = False) -> str:
    """Spend (micro-USD) as USD, the rest as counts."""
    number: Any = from_micros(value) if field == "spend" else value
    return format(number, "+" if signed else "")


def window_name(check: WindowCheck) -> str:
    label = check.window.label
    if check.window.kind == "d":
        return f"day {label[:4]}-{label[4:6]}-{label[6:]}"
    return f"month {label[:4]}-{label[4:]}"


class Command(BaseCommand):
    help = (
        "Compare each user's Redis counters for today and this month with the ledger "
        "(plus reservations in flight) and report the drift; --fix repairs it."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--user", metavar="USERNAME", help="Check only this user.")
        parser.add_argument(
            "--fix",
            action="store_true",
            help="Set drifted counters to the ledger totals plus the reservations in flight.",
        )
        parser.add_argument("--no-progress", action="store_true", help="Hide the progress bar.")

    def handle(
        self, *args: Any, user: str | None, fix: bool, no_progress: bool, **options: Any
    ) -> None:
        users = users_to_check(int(time.time() * 1_000_000), user)
        total = users.count()
        if user is not None and not total:
            raise CommandError(f"No user named {user!r}.")
        progress = tqdm(
            users.iterator(),
            total=total,
            desc="quota_reconcile",
            unit="user",
            file=sys.stderr,
            disable=True if no_progress else None,  # None: off unless stderr is a terminal
        )
        rows: list[tuple[str, ...]] = []
        windows = drifted = fixed = 0
        drifted_users: set[int] = set()
        try:
            for check in service.reconcile(progress, fix=fix):
                windows += 1
                if not check.drifted:
                    continue
                drifted += 1
                fixed += check.fixed
                drifted_users.add(check.user_id)
                for field in check.drifted:
                    rows.append(
                        (
                            check.username,
                            window_name(check),
                            field,
                            *(
                                amount(field, getattr(usage, field))
                                for usage in (check.redis, check.ledger, check.in_flight)
                            ),
                            amount(field, check.drift(field), signed=True),
                        )
                    )
        except (CountersUnavailable, redis.RedisError, RedisClusterException) as exc:
            raise CommandError(f"Redis could not be read: {exc}") from exc
        finally:
            progress.close()

        if rows:
            self.write_table([HEADER, *rows])
        summary = f"Checked {total} user{'s' * (total != 1)}, {windows} windows: "
        if not drifted:
            self.stdout.write(summary + "no drift.")
            return
        summary += f"drift in {drifted} window{'s' * (drifted != 1)} of {len(drifted_users)} "
        summary += f"user{'s' * (len(drifted_users) != 1)}."
        if fix:
            summary += f" Fixed {fixed}."
            if fixed < drifted:
                summary += f" {drifted - fixed} kept changing; run again."
        else:
            summary += " Run with --fix to repair."
        self.stdout.write(summary)

    def write_table(self, rows: list[tuple[str, ...]]) -> None:
        widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
        for row in rows:
            cells = [
                cell.ljust(width) if i < 3 else cell.rjust(width)
                for i, (cell, width) in enumerate(zip(row, widths, strict=True))
            ]
            self.stdout.write("  ".join(cells).rstrip())
