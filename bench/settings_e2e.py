"""The project's settings for the end-to-end bench under gunicorn.

`QUOTAS_BENCH_DISABLE=1` serves /v1/chat/completions without the quota path
(`bench.noquota`), so the two runs differ only by enforcement.
"""

from __future__ import annotations

import os

from quotaproject.settings import *  # noqa: F403
from quotaproject.settings import DATABASES, LOGGING

DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
LOGGING = {**LOGGING, "loggers": {"quotas": {"handlers": ["console"], "level": "WARNING"}}}

if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # Two worker processes write the ledger: WAL lets readers go on, IMMEDIATE avoids
    # "database is locked" on upgrade from a read to a write.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        init_command="PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        transaction_mode="IMMEDIATE",
        timeout=20,
    )

if os.environ.get("QUOTAS_BENCH_DISABLE") == "1":
    ROOT_URLCONF = "bench.urls_noquota"
