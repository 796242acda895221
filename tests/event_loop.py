"""Running a coroutine from a sync test, whatever loop another test left in this thread."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from asgiref.sync import sync_to_async
from django.db import connections


def run_in_fresh_loop(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """`asyncio.run(coroutine)` in a thread of its own, so it gets a loop of its own; the
    database connections its `sync_to_async` calls opened are closed after it."""

    async def main() -> Any:
        try:
            return await coroutine
        finally:
            await sync_to_async(connections.close_all)()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, main()).result()
