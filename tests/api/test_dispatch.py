"""The /v1/ endpoints resolve to the sync DRF views under WSGI and to the async views
under ASGI."""

from __future__ import annotations

from django.urls import resolve, reverse

from quotas.api import aio
from tests.event_loop import run_in_fresh_loop


async def resolved_on_the_event_loop(path: str):
    return resolve(path).func


def test_wsgi_gets_the_sync_views():
    for name in ("chat-completions", "models", "quota"):
        view = resolve(reverse(f"quotas_v1:{name}")).func
        assert getattr(view, "view_class", None) is not None  # a DRF APIView


def test_asgi_gets_the_async_views():
    found = {
        name: run_in_fresh_loop(resolved_on_the_event_loop(reverse(f"quotas_v1:{name}")))
        for name in ("chat-completions", "models", "quota")
    }
    assert found == {
        "chat-completions": aio.chat_completions,
        "models": aio.models,
        "quota": aio.quota,
    }


def test_the_names_reverse_as_before():
    assert reverse("quotas_v1:chat-completions") == "/v1/chat/completions"
    assert reverse("quotas_v1:quota") == "/v1/quota"


def test_a_loop_marked_running_without_a_task_still_gets_the_sync_views():
    import asyncio
    import threading

    found = []

    def in_a_thread() -> None:
        loop = asyncio.new_event_loop()
        asyncio._set_running_loop(loop)  # as Playwright's sync API leaves its loop
        try:
            found.append(resolve(reverse("quotas_v1:quota")).func)
        finally:
            asyncio._set_running_loop(None)
            loop.close()

    thread = threading.Thread(target=in_a_thread)
    thread.start()
    thread.join()
    assert found[0] is not aio.quota
